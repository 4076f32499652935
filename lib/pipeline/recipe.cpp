#include "pipeline/recipe.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <type_traits>

#include <yaml-cpp/yaml.h>

#include "core/error.h"
#include "io/gguf_kquants.h"
#include "core/file.h"
#include "core/resources.h"
#include "core/table.h"
#include "core/utf8.h"

namespace ptq {

namespace {

// Reads typed values out of a YAML mapping, refusing keys it was not asked about.
class Section {
 public:
  Section(const YAML::Node& node, std::string where, std::string prefix)
      : node_(node), where_(std::move(where)), prefix_(std::move(prefix)) {
    if (node_ && !node_.IsNull() && !node_.IsMap())
      fail_input("{}: \"{}\" must be a mapping of keys", where_, prefix_.empty() ? "(top level)" : prefix_);
    // YAML forbids duplicate keys, but yaml-cpp keeps the first and drops the rest silently.
    if (node_ && node_.IsMap()) {
      std::set<std::string> seen;
      for (const auto& kv : node_) {
        const std::string key = kv.first.Scalar();
        if (!seen.insert(key).second)
          fail_input("{}: key \"{}\" appears twice (line {}); give it once", where_, path(key), kv.first.Mark().line + 1);
      }
    }
  }

  template <typename T>
  std::optional<T> get(const std::string& key) {
    known_.insert(key);
    if (!node_ || node_.IsNull() || !node_[key] || node_[key].IsNull()) return std::nullopt;
    std::optional<T> v;
    try {
      v = node_[key].as<T>();
    } catch (const YAML::Exception&) {
      fail_input("{}: \"{}\" has an invalid value {} (line {})", where_, path(key), YAML::Dump(node_[key]),
                 node_[key].Mark().line + 1);
    }
    if constexpr (std::is_same_v<T, std::string>) check_utf8(key, *v);
    if constexpr (std::is_same_v<T, std::vector<std::string>>)
      for (const auto& s : *v) check_utf8(key, s);
    return v;
  }
  template <typename T>
  void read(const std::string& key, T& out) {
    if (auto v = get<T>(key)) out = *v;
  }
  YAML::Node child(const std::string& key) {
    known_.insert(key);
    return node_ && node_.IsMap() ? node_[key] : YAML::Node();
  }
  std::string path(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }
  // Call after every get/child: any other key is a typo or an option this version does not have.
  void finish() const {
    if (!node_ || !node_.IsMap()) return;
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      if (known_.count(key)) continue;
      std::string names;
      for (const auto& k : known_) names += (names.empty() ? "" : ", ") + k;
      fail_input("{}: unknown key \"{}\" (line {}); known keys here: {}", where_, path(key), kv.first.Mark().line + 1,
                 names);
    }
  }

 private:
  // The text is checked before parsing, but yaml-cpp decodes the escapes \N and \_ to the single bytes 0x85 and 0xA0.
  void check_utf8(const std::string& key, const std::string& value) const {
    if (first_invalid_utf8(value) != std::string::npos)
      fail_input("{}: \"{}\" (line {}) is not valid UTF-8 once its escapes are decoded; write the character itself "
                 "rather than \\N or \\_", where_, path(key), node_[key].Mark().line + 1);
  }

  YAML::Node node_;
  std::string where_, prefix_;
  std::set<std::string> known_;
};

std::regex compile(const std::string& pattern, const std::string& where, const std::string& key) {
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail_input("{}: \"{}\" is not a valid regular expression \"{}\" ({})", where, key, pattern, e.what());
  }
}

void check_grid(const WeightQuantSpec& s, const std::string& where, const std::string& key) {
  if (s.bits < kGridMinBits || s.bits > kGridMaxBits)
    fail_input("{}: \"{}.bits\" must be {}..{}, got {}", where, key, kGridMinBits, kGridMaxBits, s.bits);
  if (s.group_size == 0 || s.group_size < -1)
    fail_input("{}: \"{}.group_size\" must be a positive group width or -1 (per channel), got {}", where, key,
               s.group_size);
}

// "format: w4g64asym" (core/weight_grid.h) sets bits, group_size and sym at once; keys read after it override them.
std::optional<WeightGrid> read_grid_name(Section& sec, const std::string& where, const std::string& key) {
  const auto f = sec.get<std::string>("format");
  if (!f) return std::nullopt;
  return weight_grid(*f, fmt::format("{}: \"{}.format\"", where, key));
}

}  // namespace

std::optional<WeightQuantSpec> Recipe::spec_for(const std::string& path) const {
  for (const auto& pattern : ignore)
    if (std::regex_search(path, std::regex(pattern))) return std::nullopt;
  WeightQuantSpec s = weights;
  for (const auto& o : overrides) {
    if (!std::regex_search(path, o.re)) continue;
    if (o.bits) s.bits = *o.bits;
    if (o.group_size) s.group_size = *o.group_size;
    if (o.sym) s.sym = *o.sym;
  }
  return s;
}

const std::vector<std::string>& sensitivity_metric_names() {
  static const std::vector<std::string> names = {"rtn", "gptq", "kl", "rtn-kl"};
  return names;
}

const std::vector<std::string>& allocation_unit_names() {
  static const std::vector<std::string> names = {"module", "layer"};
  return names;
}

nlohmann::json Recipe::to_json() const {
  nlohmann::json allocation_json = {{"target_bpw", target_bpw}, {"candidates", candidates}};
  // Only when set: the recipe JSON is part of resume fingerprints and provenance of existing checkpoints.
  if (!allocation_sensitivity.empty()) allocation_json["sensitivity"] = allocation_sensitivity;
  if (!allocation_unit.empty()) allocation_json["unit"] = allocation_unit;
  nlohmann::json overrides_json = nlohmann::json::array();
  for (const auto& o : overrides) {
    nlohmann::json j = {{"match", o.match}};
    if (o.bits) j["bits"] = *o.bits;
    if (o.group_size) j["group_size"] = *o.group_size;
    if (o.sym) j["sym"] = *o.sym;
    overrides_json.push_back(j);
  }
  return {{"path", path},
          {"name", name},
          {"paper", paper},
          {"weights",
           {{"method", method},
            {"bits", weights.bits},
            {"group_size", weights.group_size},
            {"sym", weights.sym},
            {"mse", weights.mse},
            {"act_order", gptq.act_order},
            {"static_groups", gptq.static_groups},
            {"damp", gptq.percdamp},
            {"true_sequential", true_sequential},
            {"gguf_type", gguf ? nlohmann::json(gguf->name()) : nlohmann::json(nullptr)},
            {"gguf_scales", gptq.ggml_importance ? "imatrix" : "reference"}}},
          {"allocation", allocation_json},
          {"calibration",
           {{"data", calibration.files},
            {"nsamples", calibration.nsamples},
            {"seqlen", calibration.seqlen},
            {"seed", calibration.seed},
            {"synthetic", calibration.synthetic}}},
          {"ignore", ignore},
          {"overrides", overrides_json},
          {"activations", act_enabled ? activations.to_json() : nlohmann::json(nullptr)},
          {"migration",
           {{"method", migration.method},
            {"alpha", migration.alpha},
            {"points", migration.points},
            {"v0", migration.v0},
            {"v1", migration.v1},
            {"stat_clip", migration.stat_clip},
            {"symmetrize", migration.symmetrize},
            {"tau", migration.tau},
            {"max_split", migration.max_split},
            {"pad_to", migration.pad_to},
            {"split_on", migration.split_on},
            {"clip_search", migration.clip_grid},
            {"dynamic", migration.dynamic_points}}},
          {"rotation", {{"hadamard", rotation.enabled}, {"seed", rotation.seed}, {"online_down", rotation.online_down}}}};
}

Recipe parse_recipe(const std::string& yaml_text, const std::string& where) {
  if (const size_t bad = first_invalid_utf8(yaml_text); bad != std::string::npos) {
    const size_t line_start = yaml_text.rfind('\n', bad == 0 ? 0 : bad - 1);
    const size_t line = static_cast<size_t>(std::count(yaml_text.begin(), yaml_text.begin() + bad, '\n')) + 1;
    const size_t column = bad - (line_start == std::string::npos || bad == 0 ? 0 : line_start + 1) + 1;
    fail_input("{}: not UTF-8 text (byte 0x{:02x} at line {}, column {}); a recipe is a YAML file", where,
               static_cast<unsigned char>(yaml_text[bad]), line, column);
  }
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail_input("{}: not valid YAML ({})", where, e.what());
  }
  Recipe r;
  r.path = where;
  Section top(root, where, "");
  top.read("name", r.name);
  top.read("paper", r.paper);
  top.read("description", r.description);

  Section w(top.child("weights"), where, "weights");
  w.read("method", r.method);
  if (const auto g = read_grid_name(w, where, "weights")) r.weights = spec_of(*g, r.weights.mse);
  w.read("bits", r.weights.bits);
  w.read("group_size", r.weights.group_size);
  w.read("sym", r.weights.sym);
  w.read("mse", r.weights.mse);
  w.read("act_order", r.gptq.act_order);
  w.read("static_groups", r.gptq.static_groups);
  w.read("damp", r.gptq.percdamp);
  w.read("true_sequential", r.true_sequential);
  const auto gguf_type = w.get<std::string>("gguf_type");
  const auto gguf_scales = w.get<std::string>("gguf_scales");
  w.finish();
  if (gguf_scales) {
    if (!gguf_type) fail_input("{}: \"weights.gguf_scales\" needs \"weights.gguf_type\"", where);
    if (*gguf_scales != "imatrix" && *gguf_scales != "reference")
      fail_input("{}: \"weights.gguf_scales\" is imatrix (ggml's importance-weighted scale search) or reference (its "
                 "unweighted search, plain llama-quantize's), got \"{}\"", where, *gguf_scales);
    r.gptq.ggml_importance = *gguf_scales == "imatrix";
  }
  if (gguf_type) {
    r.gguf = parse_gguf_target(*gguf_type, fmt::format("{}: \"weights.gguf_type\"", where));
    if (r.gguf->type && !ggml_grid_traits(*r.gguf->type))
      fail_input("{}: \"weights.gguf_type\" {} is a float type; GGUF grids are the block types and mixes ({})", where,
                 *gguf_type, gguf_type_names());
    if (r.method != "rtn" && r.method != "gptq")
      fail_input("{}: \"weights.gguf_type\" works with method rtn or gptq, not {}", where, r.method);
    if (r.gptq.act_order)
      fail_input("{}: \"weights.gguf_type\": GGUF blocks hold columns in natural order; set act_order: false", where);
  }
  weight_algorithm(r.method);  // throws listing the known algorithms
  check_grid(r.weights, where, "weights");
  if (!(r.gptq.percdamp > 0)) fail_input("{}: \"weights.damp\" must be > 0, got {}", where, r.gptq.percdamp);

  Section c(top.child("calibration"), where, "calibration");
  c.read("data", r.calibration.files);
  c.read("nsamples", r.calibration.nsamples);
  c.read("seqlen", r.calibration.seqlen);
  c.read("seed", r.calibration.seed);
  c.read("synthetic", r.calibration.synthetic);
  c.finish();
  if (r.calibration.nsamples < 1) fail_input("{}: \"calibration.nsamples\" must be >= 1", where);
  if (r.calibration.seqlen < 0) fail_input("{}: \"calibration.seqlen\" must be >= 0 (0: model context)", where);

  YAML::Node act_node = top.child("activations");
  Section a(act_node, where, "activations");
  r.act_enabled = act_node && !act_node.IsNull();
  a.read("bits", r.activations.bits);
  if (auto g = a.get<std::string>("granularity")) {
    const auto gran = act_granularity_from_name(*g);
    if (!gran) fail_input("{}: \"activations.granularity\" is \"{}\"; expected per_tensor, per_channel or per_token", where, *g);
    r.activations.granularity = *gran;
  }
  a.read("sym", r.activations.sym);
  a.read("clip", r.activations.clip);
  a.read("dynamic", r.migration.dynamic_points);
  // Reserved: the KV cache stays floating point for now (issue 6); any other value is refused, not ignored.
  if (auto kv = a.get<std::string>("kv_cache"); kv && *kv != "fp")
    fail_input("{}: \"activations.kv_cache\" is \"{}\"; KV-cache quantization is not implemented yet, only \"fp\"",
               where, *kv);
  a.finish();
  if (r.activations.bits < 2 || r.activations.bits > 8)
    fail_input("{}: \"activations.bits\" must be 2..8, got {}", where, r.activations.bits);
  if (!(r.activations.clip > 0 && r.activations.clip <= 1))
    fail_input("{}: \"activations.clip\" must be in (0, 1], got {}", where, r.activations.clip);

  Section al(top.child("allocation"), where, "allocation");
  al.read("target_bpw", r.target_bpw);
  al.read("candidates", r.candidates);
  al.read("sensitivity", r.allocation_sensitivity);
  al.read("unit", r.allocation_unit);
  al.finish();
  for (const auto& [key, value, names] : {std::make_tuple("sensitivity", r.allocation_sensitivity, &sensitivity_metric_names()),
                                          std::make_tuple("unit", r.allocation_unit, &allocation_unit_names())})
    if (!value.empty() && std::find(names->begin(), names->end(), value) == names->end())
      fail_input("{}: \"allocation.{}\" {}: expected one of {}", where, key, value, join(*names));
  if (r.target_bpw < 0) fail_input("{}: \"allocation.target_bpw\" must be > 0 (or absent), got {}", where, r.target_bpw);
  for (const auto& c : r.candidates) {
    if (r.gguf) {
      const auto t = ggml_type_from_name(c);
      if (!t || !ggml_grid_traits(*t))
        fail_input("{}: \"allocation.candidates\" {}: a GGUF recipe chooses among ggml block types", where, c);
    } else {
      weight_grid(c, fmt::format("{}: \"allocation.candidates\"", where));
    }
  }

  Section m(top.child("migration"), where, "migration");
  m.read("method", r.migration.method);
  m.read("alpha", r.migration.alpha);
  m.read("points", r.migration.points);
  m.read("v0", r.migration.v0);
  m.read("v1", r.migration.v1);
  m.read("stat_clip", r.migration.stat_clip);
  m.read("symmetrize", r.migration.symmetrize);
  m.read("tau", r.migration.tau);
  m.read("max_split", r.migration.max_split);
  m.read("pad_to", r.migration.pad_to);
  m.read("split_on", r.migration.split_on);
  m.read("clip_search", r.migration.clip_grid);
  m.finish();
  migration_method(r.migration.method);  // throws listing the known methods
  for (const auto& list : {r.migration.points, r.migration.dynamic_points})
    for (const auto& p : list)
      if (!act_point_from_name(p))
        fail_input("{}: input point \"{}\" is not one of attn, o, mlp, down", where, p);
  if (!(r.migration.alpha >= 0 && r.migration.alpha <= 1))
    fail_input("{}: \"migration.alpha\" must be in [0, 1], got {}", where, r.migration.alpha);
  if (!(r.migration.v0 > 0 && r.migration.v1 >= r.migration.v0))
    fail_input("{}: \"migration.v0\"/\"v1\" must satisfy 0 < v0 <= v1", where);
  if (!(r.migration.stat_clip > 0 && r.migration.stat_clip <= 1))
    fail_input("{}: \"migration.stat_clip\" must be in (0, 1]", where);
  if (!(r.migration.tau >= 1)) fail_input("{}: \"migration.tau\" must be >= 1, got {}", where, r.migration.tau);
  if (r.migration.max_split < 2) fail_input("{}: \"migration.max_split\" must be >= 2", where);
  if (r.migration.pad_to < 0) fail_input("{}: \"migration.pad_to\" must be >= 0", where);
  if (r.migration.split_on != "step" && r.migration.split_on != "weight")
    fail_input("{}: \"migration.split_on\" is \"{}\"; expected step or weight", where, r.migration.split_on);
  for (double c : r.migration.clip_grid)
    if (!(c > 0 && c <= 1)) fail_input("{}: \"migration.clip_search\" values must be in (0, 1], got {}", where, c);
  if (r.migration.method != "none" && !r.act_enabled)
    fail_input("{}: migration method \"{}\" needs an \"activations:\" section (what the inputs are quantized to)",
               where, r.migration.method);

  Section rot(top.child("rotation"), where, "rotation");
  rot.read("hadamard", r.rotation.enabled);
  rot.read("seed", r.rotation.seed);
  rot.read("online_down", r.rotation.online_down);
  rot.finish();

  top.read("ignore", r.ignore);
  for (const auto& p : r.ignore) compile(p, where, "ignore");
  YAML::Node ov = top.child("overrides");
  if (ov && !ov.IsNull()) {
    if (!ov.IsSequence()) fail_input("{}: \"overrides\" must be a list", where);
    for (size_t i = 0; i < ov.size(); ++i) {
      const std::string key = fmt::format("overrides[{}]", i);
      Section o(ov[i], where, key);
      ModuleOverride m;
      auto match = o.get<std::string>("match");
      if (!match) fail_input("{}: \"{}.match\" (a module path regex) is required", where, key);
      m.match = *match;
      m.re = compile(m.match, where, key + ".match");
      if (const auto g = read_grid_name(o, where, key)) {
        m.bits = g->bits;
        m.group_size = g->group_size;
        m.sym = g->sym;
      }
      if (auto v = o.get<int>("bits")) m.bits = v;
      if (auto v = o.get<int64_t>("group_size")) m.group_size = v;
      if (auto v = o.get<bool>("sym")) m.sym = v;
      o.finish();
      WeightQuantSpec probe = r.weights;
      if (m.bits) probe.bits = *m.bits;
      if (m.group_size) probe.group_size = *m.group_size;
      if (m.sym) probe.sym = *m.sym;
      check_grid(probe, where, key);
      r.overrides.push_back(std::move(m));
    }
  }
  top.finish();
  if (r.gguf && (r.activation_path() || !r.overrides.empty()))
    fail_input("{}: \"weights.gguf_type\" quantizes weights only, each module to the type GGUF gives it; it cannot be "
               "combined with activations, migration, rotation or overrides", where);
  return r;
}

std::vector<BundledRecipe> bundled_recipes() {
  std::map<std::string, std::string> by_name;
  for (const auto& dir : resource_dirs("configs")) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      if (!e.is_regular_file() || e.path().extension() != ".yaml") continue;
      by_name.emplace(e.path().stem().string(), e.path().string());  // emplace: the first directory wins
    }
  }
  std::vector<BundledRecipe> out;
  for (auto& [name, path] : by_name) out.push_back({name, path});
  return out;
}

std::string resolve_recipe(const std::string& name_or_path) {
  if (file_exists(name_or_path)) return name_or_path;
  if (is_directory(name_or_path)) fail_input("--recipe {} is a directory; give a recipe file or name", name_or_path);
  const std::filesystem::path p(name_or_path);
  const std::string name = (p.extension() == ".yaml" ? p.stem() : p.filename()).string();
  const auto recipes = bundled_recipes();
  std::vector<std::string> names;
  for (const auto& b : recipes) {
    if (b.name == name) return b.path;
    names.push_back(b.name);
  }
  if (recipes.empty())
    fail_input("recipe {} is not a file, and no bundled recipes were found (searched $PTQ_HOME/configs, "
               "<binary>/../share/ptq/configs and the source tree)", name_or_path);
  fail_input("recipe {} is neither a file nor a bundled recipe; bundled: {} (`ptq recipes` describes them)",
             name_or_path, join(names));
}

Recipe load_recipe(const std::string& name_or_path) {
  const std::string path = resolve_recipe(name_or_path);
  return parse_recipe(read_text_file(path), path);
}

}  // namespace ptq
