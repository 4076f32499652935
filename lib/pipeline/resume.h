// quantize --resume: a quantize run checkpoints itself after every decoder layer, so that an interrupted run
// (SIGINT, SIGTERM, SIGKILL, power loss, an error such as a full disk) continues from the last finished layer and
// writes byte for byte the output an uninterrupted run writes.
//
// The state lives beside the output, in OUT.ptq-resume/:
//   model.spool          the checkpoint's tensors so far (SafetensorsSpoolWriter's resumable spool, io/safetensors.h)
//   hidden.safetensors   "hidden" F32 [windows, seqlen, hidden]: the calibration windows' hidden states entering the
//                        next layer (runs that stream calibration data through the layers)
//   state.json           {"version": 1, "run": <fingerprint>, "layers_done": L, "writer": CheckpointWriter::state(),
//                         "report": {"modules": [...], "quantized_params", "quantized_bits"}}
// state.json is replaced atomically after the spool is synced and hidden.safetensors renamed into place: it is the
// commit point of a layer, and anything the spool holds beyond what it records is cut off on resume.
// The fingerprint is what makes the result: ptq's version, the source model's files (name, size, mtime in ns), the
// merged recipe, the calibration data's sha256, the stats file, the batch and the thread count (BLAS sums in
// another order with other threads). A resume whose fingerprint differs is refused, naming the first difference.
//
// The directory is removed when the output is committed. SIGINT/SIGTERM and SIGKILL keep it (core/temporaries.h
// prints how to resume); it is never registered as a temporary of the output. An error inside guard() keeps it when a
// layer was finished and the error lies outside the inputs (a full disk, a failed write: the same command resumes once
// the cause is gone), and removes it on an input error (std::invalid_argument: the input must change, and a changed
// input cannot resume the state anyway).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "pipeline/quantize.h"

namespace ptq {

class CheckpointWriter;
class LayerStreamer;
class Model;
struct CalibrationData;

class QuantizeResume {
 public:
  // The state of the run writing opts.out_dir. Without opts.resume an existing state is refused (it holds finished
  // work) unless opts.force, which removes it; with opts.resume an existing state must carry the same fingerprint,
  // and a missing one starts from layer 0 with a note.
  QuantizeResume(const Model& model, const QuantizeOptions& opts, const CalibrationData* calib);
  ~QuantizeResume();
  QuantizeResume(const QuantizeResume&) = delete;
  QuantizeResume& operator=(const QuantizeResume&) = delete;

  int64_t layers_done() const { return layers_done_; }
  std::string spool_path() const { return dir_ + "/model.spool"; }
  // CheckpointWriter::state() of the interrupted run; null when starting from layer 0.
  const nlohmann::json* writer_state() const { return layers_done_ > 0 ? &state_.at("writer") : nullptr; }
  // Puts the interrupted run's per-module reports and the streamer's hidden states back (no-op from layer 0).
  void restore(QuantizeReport& report, LayerStreamer* streamer) const;

  // Records that layers [0, layers_done) are finished: their tensors are in `writer`, `streamer` (if any) holds the
  // hidden states entering layer `layers_done`.
  void save(int64_t layers_done, CheckpointWriter& writer, const QuantizeReport& report, const LayerStreamer* streamer);
  // The output is committed: the state is removed.
  void finish();

  // Runs the run's work `body` (everything after construction, up to and including finish()), applying the error
  // rule above.
  template <typename F>
  auto guard(F&& body) -> decltype(body()) {
    try {
      return body();
    } catch (const std::invalid_argument&) {
      discard();
      throw;
    } catch (...) {
      keep();
      throw;
    }
  }

 private:
  void discard();  // removes the state
  void keep();     // says where the finished layers are kept (removes a state with none)

  std::string out_, dir_;
  nlohmann::json run_;    // this run's fingerprint
  nlohmann::json state_;  // the last saved state.json
  int64_t layers_done_ = 0;
  bool finished_ = false;
};

}  // namespace ptq
