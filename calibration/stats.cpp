#include "calibration/stats.h"

#include <algorithm>
#include <limits>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/model_dir.h"

namespace ptq {

namespace {

using json = nlohmann::json;

constexpr StatTraits kStatTraits[kNumStats] = {
    {Stat::Tokens, "tokens", StatShape::Count, 0},
    {Stat::Min, "min", StatShape::Channel, 0},
    {Stat::Max, "max", StatShape::Channel, 0},
    {Stat::AbsMax, "absmax", StatShape::Channel, 0},
    {Stat::MeanAbs, "mean_abs", StatShape::Channel, 0},
    {Stat::SumSq, "imatrix_sum_sq", StatShape::Channel, 0},
    {Stat::MidrangeMean, "midrange_mean", StatShape::Channel, 0},
    {Stat::TensorAbsMax, "tensor_absmax", StatShape::Scalar, 0},
    {Stat::AbsP99, "abs_p99", StatShape::Scalar, 0.99},
    {Stat::AbsP99_9, "abs_p99_9", StatShape::Scalar, 0.999},
    {Stat::AbsP99_99, "abs_p99_99", StatShape::Scalar, 0.9999},
    {Stat::Hessian, "hessian", StatShape::Matrix, 0},
};

constexpr bool table_in_enum_order() {
  for (int i = 0; i < kNumStats; ++i)
    if (static_cast<int>(kStatTraits[i].stat) != i) return false;
  return true;
}
static_assert(table_in_enum_order(), "kStatTraits must list the stats in enum order");

constexpr const char* kLinearKeys[kNumLinear] = {"q", "k", "v", "o", "gate", "up", "down"};

std::vector<int64_t> stat_shape(StatShape shape, int64_t in) {
  switch (shape) {
    case StatShape::Count: return {1};
    case StatShape::Channel: return {in};
    case StatShape::Scalar: return {1};
    case StatShape::Matrix: return {in, in};
  }
  return {};
}

std::optional<LinearId> linear_from_key(const std::string& key) {
  for (int i = 0; i < kNumLinear; ++i)
    if (key == kLinearKeys[i]) return static_cast<LinearId>(i);
  return std::nullopt;
}

json points_json(const std::vector<InputPoint>& points) {
  json arr = json::array();
  for (const auto& p : points) {
    json consumers = json::array();
    for (LinearId id : p.consumers) consumers.push_back(linear_key(id));
    arr.push_back({{"name", p.name}, {"layer", p.layer}, {"consumers", consumers}, {"in_features", p.in_features}});
  }
  return arr;
}

std::vector<InputPoint> parse_points(const std::string& text, const std::string& path) {
  std::vector<InputPoint> out;
  json arr;
  try {
    arr = json::parse(text);
  } catch (const json::exception& e) {
    fail_input("{}: metadata \"points\" is not valid JSON ({})", path, e.what());
  }
  if (!arr.is_array()) fail_input("{}: metadata \"points\" must be a JSON array", path);
  for (const auto& j : arr) {
    InputPoint p;
    try {
      p.name = j.at("name").get<std::string>();
      p.layer = j.at("layer").get<int64_t>();
      p.in_features = j.at("in_features").get<int64_t>();
      for (const auto& c : j.at("consumers")) {
        auto id = linear_from_key(c.get<std::string>());
        if (!id) fail_input("{}: point \"{}\" names an unknown linear module \"{}\"", path, p.name, c.get<std::string>());
        p.consumers.push_back(*id);
      }
    } catch (const json::exception& e) {
      fail_input("{}: metadata \"points\" entry {} is malformed ({})", path, j.dump(), e.what());
    }
    if (p.consumers.empty() || p.layer < 0 || p.in_features < 1)
      fail_input("{}: metadata \"points\" entry {} needs consumers, a layer >= 0 and in_features >= 1", path, j.dump());
    p.first = p.consumers.front();
    out.push_back(std::move(p));
  }
  return out;
}

std::string meta_or(const std::map<std::string, std::string>& m, const std::string& key, const std::string& dflt) {
  auto it = m.find(key);
  return it == m.end() ? dflt : it->second;
}

// Bytes of the u64 length prefix + JSON header of a safetensors file.
std::string header_sha256(const std::string& path) {
  MappedFile f(path);
  if (f.size() < 8) fail_input("{}: too short for a safetensors header", path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(f.data()[i]) << (8 * i);
  if (n > f.size() - 8) fail_input("{}: header length {} exceeds the file size {}", path, n, f.size());
  return sha256_hex(f.data(), static_cast<size_t>(8 + n));
}

}  // namespace

const StatTraits& stat_traits(Stat s) { return kStatTraits[static_cast<int>(s)]; }

std::optional<Stat> stat_from_name(std::string_view name) {
  for (const auto& t : kStatTraits)
    if (name == t.name) return t.stat;
  return std::nullopt;
}

StatSet::StatSet(std::initializer_list<Stat> stats) {
  for (Stat s : stats) add(s);
}

StatSet& StatSet::add(Stat s) {
  bits_ |= 1u << static_cast<int>(s);
  return *this;
}

std::vector<Stat> StatSet::list() const {
  std::vector<Stat> out;
  for (const auto& t : kStatTraits)
    if (has(t.stat)) out.push_back(t.stat);
  return out;
}

std::string StatSet::names() const {
  std::string out;
  for (Stat s : list()) out += (out.empty() ? "" : ",") + std::string(stat_name(s));
  return out;
}

StatSet default_stats() {
  StatSet s;
  for (const auto& t : kStatTraits)
    if (t.stat != Stat::Hessian) s.add(t.stat);
  return s;
}

const char* linear_key(LinearId id) { return kLinearKeys[static_cast<int>(id)]; }

std::string stat_tensor_name(const std::string& point, Stat s) { return point + ".input." + stat_name(s); }

std::vector<InputPoint> layer_input_points(const ModelConfig& cfg, int64_t layer) {
  const int64_t attn_width = cfg.n_heads * cfg.head_dim;
  std::vector<InputPoint> points = {
      {layer, LinearId::Q, {LinearId::Q, LinearId::K, LinearId::V}, cfg.hidden, ""},
      {layer, LinearId::O, {LinearId::O}, attn_width, ""},
      cfg.gated_mlp ? InputPoint{layer, LinearId::Gate, {LinearId::Gate, LinearId::Up}, cfg.hidden, ""}
                    : InputPoint{layer, LinearId::Up, {LinearId::Up}, cfg.hidden, ""},
      {layer, LinearId::Down, {LinearId::Down}, cfg.ffn, ""},
  };
  for (auto& p : points) p.name = cfg.layer_module(layer, linear_module_name(cfg, p.first));
  return points;
}

void CalibrationStats::add_point(const InputPoint& p) {
  if (by_name_.count(p.name)) fail_input("{}: observation point \"{}\" appears twice", source, p.name);
  for (LinearId id : p.consumers)
    if (find_point(p.layer, id) != nullptr)
      fail_input("{}: layer {} {} is a consumer of two observation points", source, p.layer, linear_key(id));
  by_name_[p.name] = points_.size();
  for (LinearId id : p.consumers) by_consumer_[{p.layer, static_cast<int>(id)}] = points_.size();
  points_.push_back(p);
}

void CalibrationStats::set(const std::string& point, Stat s, at::Tensor t) {
  auto it = by_name_.find(point);
  if (it == by_name_.end()) fail_input("{}: no observation point \"{}\"", source, point);
  const std::string name = stat_tensor_name(point, s);
  const StatTraits& tr = stat_traits(s);
  const std::vector<int64_t> shape = stat_shape(tr.shape, points_[it->second].in_features);
  const at::ScalarType dtype = tr.shape == StatShape::Count ? at::kLong : at::kFloat;
  if (t.sizes().vec() != shape || t.scalar_type() != dtype)
    fail_input("{}: tensor \"{}\" is {} {}, expected {} {}", source, name, c10::toString(t.scalar_type()),
               shape_str(t.sizes().vec()), c10::toString(dtype), shape_str(shape));
  tensors_[name] = t.contiguous();
}

const InputPoint* CalibrationStats::find_point(int64_t layer, LinearId id) const {
  auto it = by_consumer_.find({layer, static_cast<int>(id)});
  return it == by_consumer_.end() ? nullptr : &points_[it->second];
}

const InputPoint& CalibrationStats::point(int64_t layer, LinearId id) const {
  const InputPoint* p = find_point(layer, id);
  if (p == nullptr) fail_input("{}: no observation point for layer {} {}", source, layer, linear_key(id));
  return *p;
}

bool CalibrationStats::has(int64_t layer, LinearId id, Stat s) const {
  const InputPoint* p = find_point(layer, id);
  return p != nullptr && tensors_.count(stat_tensor_name(p->name, s)) != 0;
}

const at::Tensor& CalibrationStats::get(int64_t layer, LinearId id, Stat s) const {
  const std::string name = stat_tensor_name(point(layer, id).name, s);
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    fail_input("{}: no statistic \"{}\" (tensor \"{}\"); the file has {}; re-run ptq calibrate with the "
               "statistics this step needs (e.g. --hessian)",
               source, stat_name(s), name, meta_or(metadata, "stats", "none listed"));
  return it->second;
}

std::string model_fingerprint(const std::string& model_dir) {
  const std::string config = read_text_file(model_dir + "/config.json");
  std::string acc = "ptq-model-fingerprint-v1\n" + sha256_hex(config.data(), config.size()) + "\n";
  TensorArchive archive(model_dir);
  std::vector<const SafetensorsFile*> files;
  for (const auto& f : archive.files()) files.push_back(f.get());
  auto base = [](const std::string& p) { return p.substr(p.find_last_of('/') + 1); };
  std::sort(files.begin(), files.end(),
            [&](const SafetensorsFile* a, const SafetensorsFile* b) { return base(a->path()) < base(b->path()); });
  constexpr size_t kEdge = 4096;
  std::vector<uint8_t> sample;
  for (const SafetensorsFile* f : files) {
    acc += base(f->path()) + " " + header_sha256(f->path()) + "\n";
    std::vector<std::string> names;
    for (const auto& t : f->tensors()) names.push_back(t.name);
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      const TensorView v = f->view(name);
      const size_t n = v.nbytes(), head = std::min(n, kEdge), tail = std::min(n - head, kEdge);
      sample.assign(v.data, v.data + head);
      sample.insert(sample.end(), v.data + n - tail, v.data + n);
      acc += sha256_hex(sample.data(), sample.size()) + "\n";
    }
  }
  return sha256_hex(acc.data(), acc.size());
}

void check_stats_output(const std::string& path, const std::string& model, bool overwrite) {
  if (is_directory(path)) fail_input("{} is a directory; expected a stats file path", path);
  check_output_path(path, model, overwrite);
}

void save_calibration_stats(const CalibrationStats& stats, const std::string& path, bool overwrite) {
  check_stats_output(path, stats.metadata.count("model") ? stats.metadata.at("model") : std::string(), overwrite);
  SafetensorsWriter w;
  for (const auto& [key, value] : stats.metadata) w.set_metadata(key, value);
  w.set_metadata("format", kCalibrationFormat);
  w.set_metadata(kOutputMarker, std::string("ptq ") + PTQ_VERSION);  // --force may replace it (core/model_dir.h)
  w.set_metadata("format_version", std::to_string(kCalibrationFormatVersion));
  w.set_metadata("points", points_json(stats.points()).dump());
  StatSet present;
  for (const auto& p : stats.points())
    for (const auto& t : kStatTraits)
      if (stats.tensors().count(stat_tensor_name(p.name, t.stat))) present.add(t.stat);
  w.set_metadata("stats", present.names());
  for (const auto& [name, t] : stats.tensors()) {
    if (t.scalar_type() == at::kLong)
      w.add(name, DType::I64, t.sizes().vec(), t.data_ptr<int64_t>(), static_cast<size_t>(t.numel()) * 8);
    else
      w.add_f32(name, t.sizes().vec(), t.data_ptr<float>());
  }
  w.write(path);
}

CalibrationStats load_calibration_stats(const std::string& path, const std::string& fingerprint,
                                        const std::string& model_label) {
  if (!file_exists(path)) fail_input("calibration stats file {} does not exist", path);
  SafetensorsFile file(path);
  const auto& meta = file.metadata();
  const std::string format = meta_or(meta, "format", "");
  if (format != kCalibrationFormat)
    fail_input("{} is not a ptq calibration stats file (metadata format is \"{}\", expected \"{}\")", path, format,
               kCalibrationFormat);
  const std::string version_text = meta_or(meta, "format_version", "");
  int version = 0;
  try {
    size_t used = 0;
    version = std::stoi(version_text, &used);
    if (used != version_text.size()) version = 0;
  } catch (const std::exception&) {
    version = 0;
  }
  if (version < 1) fail_input("{}: metadata format_version \"{}\" is not a positive integer", path, version_text);
  if (version > kCalibrationFormatVersion)
    fail_input("{} is calibration format version {}, newer than the version {} this ptq ({}) reads; use a newer ptq "
               "or re-run ptq calibrate",
               path, version, kCalibrationFormatVersion, PTQ_VERSION);
  const std::string made_for = meta_or(meta, "model_fingerprint", "");
  if (made_for != fingerprint)
    fail_input("calibration stats {} were made for another model: fingerprint {} (model {}) does not match {} of {}; "
               "re-run ptq calibrate on this model",
               path, made_for.empty() ? "(none)" : made_for, meta_or(meta, "model", "unknown"), fingerprint,
               model_label);

  CalibrationStats stats;
  stats.source = path;
  stats.metadata = meta;
  auto points_it = meta.find("points");
  if (points_it == meta.end()) fail_input("{}: metadata has no \"points\"", path);
  for (const auto& p : parse_points(points_it->second, path)) stats.add_point(p);
  for (const TensorInfo& info : file.tensors()) {
    const std::string& name = info.name;
    const size_t at = name.rfind(".input.");
    std::optional<Stat> stat = at == std::string::npos ? std::nullopt : stat_from_name(name.substr(at + 7));
    if (!stat) fail_input("{}: tensor \"{}\" is not named <point>.input.<statistic>", path, name);
    const StatShape shape = stat_traits(*stat).shape;
    const DType want = shape == StatShape::Count ? DType::I64 : DType::F32;
    if (info.dtype != want)
      fail_input("{}: tensor \"{}\" has dtype {}, expected {}", path, name, dtype_name(info.dtype), dtype_name(want));
    const TensorView v = file.view(name);
    at::Tensor t = at::from_blob(const_cast<uint8_t*>(v.data), info.shape,
                                 at::TensorOptions().dtype(want == DType::I64 ? at::kLong : at::kFloat))
                       .clone();
    stats.set(name.substr(0, at), *stat, std::move(t));
  }
  return stats;
}

CalibrationStats load_calibration_stats(const std::string& path, const Model& model) {
  return load_calibration_stats(path, model_fingerprint(model.path()), model.path());
}

std::vector<PointSummary> summarize_stats(const CalibrationStats& stats) {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  std::vector<PointSummary> out;
  for (const auto& p : stats.points()) {
    PointSummary s;
    s.point = p.name;
    s.layer = p.layer;
    s.in_features = p.in_features;
    s.absmax = s.p99_9 = s.median_absmax = s.outlier_ratio = kNaN;
    if (stats.has(p.layer, p.first, Stat::Tokens)) s.tokens = stats.get(p.layer, p.first, Stat::Tokens).item<int64_t>();
    if (stats.has(p.layer, p.first, Stat::AbsP99_9)) s.p99_9 = stats.get(p.layer, p.first, Stat::AbsP99_9).item<float>();
    if (stats.has(p.layer, p.first, Stat::AbsMax)) {
      const at::Tensor a = stats.get(p.layer, p.first, Stat::AbsMax);
      s.max_channel = a.argmax().item<int64_t>();
      s.absmax = a.max().item<float>();
      s.median_absmax = a.median().item<float>();
      s.outlier_ratio = s.median_absmax > 0 ? s.absmax / s.median_absmax : kNaN;
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace ptq
