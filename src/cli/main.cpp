// obr: command-line entry point. Each subcommand lives in its own cli/cmd_*.cpp and
// registers itself in the table below.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "cli/commands.h"
#include "core/check.h"

namespace {

void print_usage() {
  std::printf(
      "obr: OBR + QuaRot compression (W4A4KV4 + 50%% or 2:4 sparsity) and INT4 sparse inference on CPUs\n\n"
      "usage: obr <command> [options]     (obr <command> --help for each)\n\ncommands:\n");
  for (const auto& c : obr::cli::commands()) std::printf("  %-12s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("obr 0.1.0\n");
    return 0;
  }
  for (const auto& c : obr::cli::commands()) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const obr::Error& e) {
      std::fprintf(stderr, "obr %s: error: %s\n", c.name, e.what());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "obr %s: unexpected error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "obr: unknown command '%s' (run 'obr --help' for the list)\n", argv[1]);
  return 2;
}
