// Helpers shared by the test files.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>

#include "pagedattn/error.h"

namespace pagedattn::test {

/// A fresh seed every run (PAGEDATTN_TEST_SEED pins one to reproduce a failure); printed by the tests that
/// use it.
inline uint64_t fresh_seed() {
  if (const char* s = std::getenv("PAGEDATTN_TEST_SEED")) return std::stoull(s);
  return (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
}

}  // namespace pagedattn::test

/// Expects `stmt` to throw pagedattn::Error whose message contains `fragment`.
#define EXPECT_ERROR_CONTAINS(stmt, fragment)                                         \
  do {                                                                                \
    try {                                                                             \
      stmt;                                                                           \
      ADD_FAILURE() << "expected pagedattn::Error containing \"" << fragment << "\""; \
    } catch (const ::pagedattn::Error& e) {                                           \
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)              \
          << "message: " << e.what() << "\nexpected to contain: " << fragment;        \
    }                                                                                 \
  } while (0)
