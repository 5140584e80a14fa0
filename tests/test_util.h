// Helpers shared by the test files.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>

#include "pagedattn/error.h"

namespace pagedattn::test {

/// The seed of this test run: fresh random every run, or PAGEDATTN_TEST_SEED when set. One value per process,
/// so a failing test replays exactly with `PAGEDATTN_TEST_SEED=N <test binary> --gtest_filter=<its name>`
/// (the test main prints N at the start and the replay line after each failure).
inline uint64_t run_seed() {
  static const uint64_t seed = [] {
    if (const char* s = std::getenv("PAGEDATTN_TEST_SEED")) return static_cast<uint64_t>(std::stoull(s));
    return (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  }();
  return seed;
}

}  // namespace pagedattn::test

/// Expects `stmt` to throw pagedattn::Error whose message contains `fragment` (the caught error's name cannot
/// shadow the caller's locals).
#define EXPECT_ERROR_CONTAINS(stmt, fragment)                                                \
  do {                                                                                       \
    try {                                                                                    \
      stmt;                                                                                  \
      ADD_FAILURE() << "expected pagedattn::Error containing \"" << fragment << "\"";        \
    } catch (const ::pagedattn::Error& expected_error_) {                                    \
      EXPECT_NE(std::string(expected_error_.what()).find(fragment), std::string::npos)       \
          << "message: " << expected_error_.what() << "\nexpected to contain: " << fragment; \
    }                                                                                        \
  } while (0)
