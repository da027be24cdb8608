// Subcommand registry and a small argument parser shared by every `obr` command.
//
// A command file registers itself:
//   static int run_inspect(int argc, char** argv);
//   OBR_COMMAND(inspect, "print a model's config, tensors and sizes", run_inspect);
#pragma once

#include <map>
#include <string>
#include <vector>

namespace obr::cli {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);  // argv[0] is the command name
};

// All registered commands, sorted by name.
const std::vector<Command>& commands();
bool register_command(const Command& c);

// Declarative options: declare, parse, then read. Unknown options, missing values and
// malformed numbers are errors that name the option. `--help` prints the generated help
// and makes parse() return false (the command then returns 0).
class Args {
 public:
  Args(std::string command, std::string usage, std::string description);

  // Options with a value (`--name VALUE` or `--name=VALUE`); def is shown in the help.
  void option(const std::string& name, const std::string& def, const std::string& help);
  // Boolean switches (`--name`); `--no-name` turns one off when def is true.
  void flag(const std::string& name, bool def, const std::string& help);
  // Short alias, e.g. alias("-o", "--out").
  void alias(const std::string& shorthand, const std::string& name);
  // Named positional arguments, in order. Optional ones must come last.
  void positional(const std::string& name, const std::string& help, bool required = true);

  bool parse(int argc, char** argv);  // false: --help was printed

  std::string str(const std::string& name) const;
  bool has(const std::string& name) const;  // given on the command line (not defaulted)
  long long integer(const std::string& name) const;
  double real(const std::string& name) const;
  bool on(const std::string& name) const;
  std::string pos(const std::string& name) const;
  bool has_pos(const std::string& name) const;
  void print_help() const;

 private:
  struct Opt {
    std::string def, help;
    bool is_flag;
  };
  std::string command_, usage_, description_;
  std::vector<std::string> order_;
  std::map<std::string, Opt> opts_;
  std::map<std::string, std::string> aliases_;
  std::vector<std::pair<std::string, std::pair<std::string, bool>>> positionals_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::string> pos_values_;
};

}  // namespace obr::cli

#define OBR_COMMAND(name, summary, fn) \
  static const bool obr_command_registered_##name = ::obr::cli::register_command({#name, summary, fn})
