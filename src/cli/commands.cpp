#include "cli/commands.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "core/check.h"

namespace obr::cli {

static std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}

bool register_command(const Command& c) {
  auto& r = registry();
  r.push_back(c);
  std::sort(r.begin(), r.end(), [](const Command& a, const Command& b) { return std::string(a.name) < b.name; });
  return true;
}

const std::vector<Command>& commands() { return registry(); }

Args::Args(std::string command, std::string usage, std::string description)
    : command_(std::move(command)), usage_(std::move(usage)), description_(std::move(description)) {
  flag("help", false, "show this help");
  alias("-h", "--help");
}

void Args::option(const std::string& name, const std::string& def, const std::string& help) {
  opts_[name] = {def, help, false};
  order_.push_back(name);
}

void Args::flag(const std::string& name, bool def, const std::string& help) {
  opts_[name] = {def ? "1" : "0", help, true};
  order_.push_back(name);
}

void Args::alias(const std::string& shorthand, const std::string& name) { aliases_[shorthand] = name; }

void Args::positional(const std::string& name, const std::string& help, bool required) {
  positionals_.push_back({name, {help, required}});
}

bool Args::parse(int argc, char** argv) {
  size_t npos = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto al = aliases_.find(a);
    if (al != aliases_.end()) a = al->second;
    if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
      std::string name = a.substr(2), value;
      bool has_value = false;
      size_t eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      auto it = opts_.find(name);
      if (it == opts_.end() && name.compare(0, 3, "no-") == 0) {
        auto neg = opts_.find(name.substr(3));
        if (neg != opts_.end() && neg->second.is_flag) {
          values_[name.substr(3)] = "0";
          continue;
        }
      }
      if (it == opts_.end()) fail("unknown option --", name, " (see 'obr ", command_, " --help')");
      if (it->second.is_flag) {
        OBR_CHECK(!has_value, "option --", name, " is a switch and takes no value");
        values_[name] = "1";
      } else {
        if (!has_value) {
          OBR_CHECK(i + 1 < argc, "option --", name, " needs a value");
          value = argv[++i];
        }
        values_[name] = value;
      }
      if (name == "help") {
        print_help();
        return false;
      }
    } else {
      OBR_CHECK(npos < positionals_.size(), "unexpected argument '", a, "' (see 'obr ", command_, " --help')");
      pos_values_[positionals_[npos++].first] = a;
    }
  }
  for (size_t k = npos; k < positionals_.size(); ++k)
    OBR_CHECK(!positionals_[k].second.second, "missing argument ", positionals_[k].first, " (usage: obr ", command_,
              " ", usage_, ")");
  return true;
}

std::string Args::str(const std::string& name) const {
  auto v = values_.find(name);
  if (v != values_.end()) return v->second;
  auto o = opts_.find(name);
  OBR_CHECK(o != opts_.end(), "internal: option --", name, " was not declared");
  return o->second.def;
}

bool Args::has(const std::string& name) const { return values_.count(name) != 0; }

long long Args::integer(const std::string& name) const {
  std::string s = str(name);
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  OBR_CHECK(!s.empty() && end && *end == 0 && errno == 0, "option --", name, " expects an integer, got '", s, "'");
  return v;
}

double Args::real(const std::string& name) const {
  std::string s = str(name);
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  OBR_CHECK(!s.empty() && end && *end == 0 && errno == 0, "option --", name, " expects a number, got '", s, "'");
  return v;
}

bool Args::on(const std::string& name) const { return str(name) == "1"; }

std::string Args::pos(const std::string& name) const {
  auto v = pos_values_.find(name);
  return v == pos_values_.end() ? std::string() : v->second;
}

bool Args::has_pos(const std::string& name) const { return pos_values_.count(name) != 0; }

void Args::print_help() const {
  std::printf("usage: obr %s %s\n\n%s\n", command_.c_str(), usage_.c_str(), description_.c_str());
  if (!positionals_.empty()) {
    std::printf("\narguments:\n");
    for (const auto& p : positionals_)
      std::printf("  %-22s %s%s\n", p.first.c_str(), p.second.first.c_str(), p.second.second ? "" : " (optional)");
  }
  std::printf("\noptions:\n");
  for (const auto& name : order_) {
    const Opt& o = opts_.at(name);
    std::string left = "--" + name + (o.is_flag ? "" : " V");
    for (const auto& a : aliases_)
      if (a.second == "--" + name) left = a.first + ", " + left;
    std::string def = o.is_flag ? (o.def == "1" ? " [on; --no-" + name + " turns it off]" : "")
                                : (o.def.empty() ? "" : " [default: " + o.def + "]");
    std::printf("  %-22s %s%s\n", left.c_str(), o.help.c_str(), def.c_str());
  }
}

}  // namespace obr::cli
