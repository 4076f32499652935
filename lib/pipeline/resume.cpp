#include "pipeline/resume.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "calibration/data.h"
#include "calibration/streamer.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/file.h"
#include "core/model_dir.h"
#include "core/temporaries.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "quant/checkpoint.h"

namespace ptq {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kStateVersion = 1;

std::string without_trailing_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

// {"size", "mtime_ns"} of a file, or null when it does not exist.
json file_identity(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return nullptr;
  return {{"size", static_cast<uint64_t>(st.st_size)},
          {"mtime_ns", static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec}};
}

json model_files(const std::string& model_path) {
  json files = json::object();
  std::error_code ec;
  if (!fs::is_directory(model_path, ec)) {
    files[fs::path(model_path).filename().string()] = file_identity(model_path);
    return files;
  }
  for (const auto& e : fs::directory_iterator(model_path, ec)) {
    const std::string name = e.path().filename().string();
    if (!name.empty() && name[0] != '.' && e.is_regular_file()) files[name] = file_identity(e.path().string());
  }
  return files;
}

json run_fingerprint(const Model& model, const QuantizeOptions& opts, const CalibrationData* calib) {
  std::error_code ec;
  const fs::path real = fs::weakly_canonical(model.path(), ec);
  json run = {{"ptq", PTQ_VERSION},
              {"model", ec ? model.path() : real.string()},
              {"model_files", model_files(model.path())},
              {"recipe", opts.recipe.to_json()},
              {"calibration_sha256", calib ? json(calib->data_sha256) : json(nullptr)},
              {"stats", opts.stats_path.empty() ? json(nullptr)
                                                : json{{"path", opts.stats_path},
                                                       {"file", file_identity(opts.stats_path)}}},
              {"batch", opts.batch},
              {"threads", at::get_num_threads()}};
  return run;
}

std::string short_dump(const json& j) {
  std::string s = j.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

// The first place where `was` and `now` differ ("recipe.weights.bits: 4 -> 3"); "" when equal.
std::string first_difference(const json& was, const json& now, const std::string& where) {
  if (was == now) return {};
  if (was.is_object() && now.is_object()) {
    for (const auto& [k, v] : was.items()) {
      const std::string at = where.empty() ? k : where + "." + k;
      if (!now.contains(k)) return fmt::format("{}: {} -> (absent)", at, short_dump(v));
      const std::string d = first_difference(v, now.at(k), at);
      if (!d.empty()) return d;
    }
    for (const auto& [k, v] : now.items())
      if (!was.contains(k)) return fmt::format("{}: (absent) -> {}", where.empty() ? k : where + "." + k, short_dump(v));
  }
  return fmt::format("{}: {} -> {}", where, short_dump(was), short_dump(now));
}

// Doubles as JSON that reads back bit-exactly, inf and NaN included (JSON numbers cannot hold them).
json num(double v) { return std::isfinite(v) ? json(v) : json(fmt::format("{}", v)); }
double num(const json& j) { return j.is_string() ? std::strtod(j.get<std::string>().c_str(), nullptr) : j.get<double>(); }
json opt_num(const std::optional<double>& v) { return v ? num(*v) : json(nullptr); }
std::optional<double> opt_num(const json& j) {
  if (j.is_null()) return std::nullopt;
  return num(j);
}

json report_json(const QuantizeReport& r) {
  json mods = json::array();
  for (const ModuleReport& m : r.modules)
    mods.push_back({{"module", m.module},
                    {"layer", m.layer},
                    {"format", m.format},
                    {"method", m.method},
                    {"params", m.params},
                    {"nmse", num(m.weight_error.nmse)},
                    {"snr_db", num(m.weight_error.snr_db)},
                    {"max_abs_error", num(m.weight_error.max_abs_error)},
                    {"sign_flips", m.weight_error.sign_flips},
                    {"zero_fraction", num(m.weight_error.zero_fraction)},
                    {"loss", opt_num(m.loss)},
                    {"output_error", opt_num(m.output_error)},
                    {"rtn_output_error", opt_num(m.rtn_output_error)},
                    {"warning", m.warning}});
  return {{"modules", mods}, {"quantized_params", r.quantized_params}, {"quantized_bits", num(r.quantized_bits)}};
}

void restore_report(const json& j, QuantizeReport& r) {
  for (const json& m : j.at("modules")) {
    ModuleReport x;
    x.module = m.at("module").get<std::string>();
    x.layer = m.at("layer").get<int64_t>();
    x.format = m.at("format").get<std::string>();
    x.method = m.at("method").get<std::string>();
    x.params = m.at("params").get<int64_t>();
    x.weight_error.nmse = num(m.at("nmse"));
    x.weight_error.snr_db = num(m.at("snr_db"));
    x.weight_error.max_abs_error = num(m.at("max_abs_error"));
    x.weight_error.sign_flips = m.at("sign_flips").get<int64_t>();
    x.weight_error.zero_fraction = num(m.at("zero_fraction"));
    x.loss = opt_num(m.at("loss"));
    x.output_error = opt_num(m.at("output_error"));
    x.rtn_output_error = opt_num(m.at("rtn_output_error"));
    x.warning = m.at("warning").get<std::string>();
    r.modules.push_back(std::move(x));
  }
  r.quantized_params = j.at("quantized_params").get<int64_t>();
  r.quantized_bits = num(j.at("quantized_bits"));
}

// An exclusive lock on the state directory for the life of the process: two runs must not resume one state.
void lock_state_dir(const std::string& dir) {
  const std::string path = dir + "/lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail_io("cannot create {}: {}", path, std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    fail_input("{} is in use by another ptq process writing the same output; wait for it or stop it", dir);
  }
  // Deliberately kept open: the lock goes with the process.
}

}  // namespace

QuantizeResume::QuantizeResume(const Model& model, const QuantizeOptions& opts, const CalibrationData* calib)
    : out_(without_trailing_slashes(opts.out_dir)), dir_(out_ + ".ptq-resume"),
      run_(run_fingerprint(model, opts, calib)) {
  // The state directory lies next to the output and follows the output's rules (a directory of that name that ptq
  // did not make is refused).
  check_output_path(dir_, model.path(), /*force=*/true);
  const std::string state_path = dir_ + "/state.json";
  std::error_code ec;
  const bool exists = fs::exists(dir_, ec);
  if (exists && !fs::is_directory(dir_, ec))
    fail_input("{} exists and is not a directory; ptq keeps the state of a resumable run there: move it away", dir_);
  if (exists) lock_state_dir(dir_);
  const bool has_state = exists && file_exists(state_path);
  if (has_state && opts.resume) {
    json saved;
    try {
      saved = json::parse(read_text_file(state_path));
      if (saved.at("version").get<int>() != kStateVersion)
        fail_input("{} was written by another version of ptq; start over: drop --resume, add --force", state_path);
      const std::string diff = first_difference(saved.at("run"), run_, "");
      if (!diff.empty())
        fail_input("{} was left by a different run ({}); re-run the interrupted command unchanged with --resume, or "
                   "start over: drop --resume, add --force", dir_, diff);
      layers_done_ = saved.at("layers_done").get<int64_t>();
      saved.at("writer");
      saved.at("report");
    } catch (const json::exception& e) {
      fail_input("{} is damaged ({}); start over: drop --resume, add --force", state_path, e.what());
    }
    state_ = std::move(saved);
    std::fprintf(stderr, "note: resuming %s: %lld layer(s) already done (state in %s)\n", out_.c_str(),
                 static_cast<long long>(layers_done_), dir_.c_str());
    return;
  }
  if (has_state && !opts.force) {
    int64_t done = -1;
    try {
      done = json::parse(read_text_file(state_path)).at("layers_done").get<int64_t>();
    } catch (const std::exception&) {
    }
    fail_input("{} holds {} finished layer(s) of an interrupted run writing {}: add --resume to continue it, or "
               "--force to start over (removes it)", dir_, done < 0 ? std::string("the") : std::to_string(done), out_);
  }
  if (opts.resume && !has_state)
    std::fprintf(stderr, "note: no interrupted run of %s to resume (%s holds no state); starting from layer 0\n",
                 out_.c_str(), dir_.c_str());
  // A fresh start: whatever is there (a state given up with --force, or one killed before its first layer) goes.
  if (exists) fs::remove_all(dir_, ec);
  if (ec) fail_io("cannot remove {}: {}", dir_, ec.message());
  fs::create_directories(dir_, ec);
  if (ec) fail_io("cannot create {}: {}", dir_, ec.message());
  write_text_file_atomic(dir_ + "/" + kOutputMarkerFile, "the state of a resumable ptq quantize run\n");
  lock_state_dir(dir_);
}

// Reached without finish() or guard() only when the work never started (an exception between construction and
// guard()): nothing of this run is in the state yet, so a fresh one goes and a resumed one stays as it was.
QuantizeResume::~QuantizeResume() {
  if (!finished_ && state_.is_null()) discard();
}

void QuantizeResume::discard() {
  finished_ = true;
  set_interrupt_note("");
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

void QuantizeResume::keep() {
  if (layers_done_ == 0) return discard();  // nothing finished: nothing worth keeping
  finished_ = true;
  set_interrupt_note("");
  std::fprintf(stderr, "note: the %lld finished layer(s) are kept in %s; once the cause is fixed, the same command "
               "with --resume continues from there\n", static_cast<long long>(layers_done_), dir_.c_str());
}

void QuantizeResume::restore(QuantizeReport& report, LayerStreamer* streamer) const {
  if (layers_done_ == 0) return;
  try {
    restore_report(state_.at("report"), report);
  } catch (const json::exception& e) {
    fail_input("{}/state.json: malformed report ({}); start over: drop --resume, add --force", dir_, e.what());
  }
  if (!streamer) return;
  const SafetensorsFile f(dir_ + "/hidden.safetensors");
  const TensorView v = f.view("hidden");
  at::Tensor& h = streamer->mutable_hidden();
  if (v.dtype() != DType::F32 || v.shape() != h.sizes().vec())
    fail_input("{}/hidden.safetensors holds {} {}, expected F32 {}; start over: drop --resume, add --force", dir_,
               dtype_name(v.dtype()), shape_str(v.shape()), shape_str(h.sizes().vec()));
  h.copy_(at::from_blob(const_cast<uint8_t*>(v.data), v.shape(), at::kFloat));
}

void QuantizeResume::save(int64_t layers_done, CheckpointWriter& writer, const QuantizeReport& report,
                          const LayerStreamer* streamer) {
  json state = {{"version", kStateVersion},
                {"run", run_},
                {"layers_done", layers_done},
                {"writer", writer.state()},  // syncs the spool
                {"report", report_json(report)}};
  if (streamer) {
    const at::Tensor h = streamer->hidden().contiguous();
    SafetensorsStreamWriter out(dir_ + "/hidden.safetensors", {{"hidden", DType::F32, h.sizes().vec()}}, {});
    out.write("hidden", h.data_ptr(), static_cast<size_t>(h.numel()) * sizeof(float));
    out.commit();
  }
  write_text_file_atomic(dir_ + "/state.json", state.dump() + "\n");
  state_ = std::move(state);
  layers_done_ = layers_done;
  set_interrupt_note(fmt::format("the {} finished layer(s) are kept in {}: the same command with --resume continues "
                                 "from there", layers_done_, dir_));
  fault_point("layer");
}

void QuantizeResume::finish() { discard(); }

}  // namespace ptq
