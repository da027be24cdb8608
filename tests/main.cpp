// doctest entry point. Run from the repository root (tests read data/).
// The closing summary line ("[doctest] test cases: N | N passed ...") shows how many ran.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

int main(int argc, char** argv) {
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
