// The main of every GoogleTest binary: prints this run's seed first and, after a failing test, the command
// line that replays it with the same random inputs.
#include <gtest/gtest.h>

#include <cstdio>

#include "test_util.h"

namespace {

class SeedReporter : public ::testing::EmptyTestEventListener {
 public:
  explicit SeedReporter(const char* binary) : binary_(binary) {}
  void OnTestProgramStart(const ::testing::UnitTest&) override {
    std::printf("random seed of this run: %llu (PAGEDATTN_TEST_SEED=%llu replays it)\n",
                static_cast<unsigned long long>(pagedattn::test::run_seed()),
                static_cast<unsigned long long>(pagedattn::test::run_seed()));
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (!info.result()->Failed()) return;
    std::printf("replay: PAGEDATTN_TEST_SEED=%llu %s --gtest_filter='%s.%s'\n",
                static_cast<unsigned long long>(pagedattn::test::run_seed()), binary_, info.test_suite_name(),
                info.name());
  }

 private:
  const char* binary_;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::UnitTest::GetInstance()->listeners().Append(new SeedReporter(argv[0]));
  return RUN_ALL_TESTS();
}
