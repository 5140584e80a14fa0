# `cmake --install`: the public headers, the library and a CMake package, so that an application can
#   find_package(pagedattn REQUIRED)
#   target_link_libraries(app PRIVATE pagedattn::pagedattn)
# (tests/install/ builds such a consumer against an installed tree).
include(CMakePackageConfigHelpers)
set(PAGEDATTN_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/pagedattn)
install(TARGETS pagedattn EXPORT pagedattnTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/pagedattn DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT pagedattnTargets NAMESPACE pagedattn:: DESTINATION ${PAGEDATTN_INSTALL_CMAKEDIR})
configure_package_config_file(cmake/pagedattnConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/pagedattnConfig.cmake
                              INSTALL_DESTINATION ${PAGEDATTN_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/pagedattnConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/pagedattnConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/pagedattnConfigVersion.cmake
        DESTINATION ${PAGEDATTN_INSTALL_CMAKEDIR})
