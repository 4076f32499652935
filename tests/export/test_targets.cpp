// `ptq recipes` (export/targets.h) against the exporters themselves: for weight-only grids, a checkpoint quantized
// with the grid is exported to GGUF, GPTQ and compressed-tensors, and each export must succeed exactly when the
// table says that runtime loads it as is. Recipe names resolve from the bundled configs/.
#include <catch2/catch.hpp>

#include <filesystem>
#include <stdexcept>

#include "export/compressed_tensors_export.h"
#include "export/gguf_export.h"
#include "export/gptq_export.h"
#include "export/targets.h"
#include "pipeline/quantize.h"
#include "pipeline/recipe.h"
#include "tests/test_paths.h"

using namespace ptq;

namespace {

bool succeeds(const std::function<void()>& f) {
  try {
    f();
    return true;
  } catch (const std::invalid_argument&) {
    return false;
  }
}

std::string quantize_with(const Recipe& r, const std::string& out) {
  Model model(test::repo_path("data/models/sotu-llama-8m"));  // widths 256 / 768: every grid fits every module
  QuantizeOptions o;
  o.recipe = r;
  o.out_dir = out;
  quantize_model(model, o);
  return out;
}

const ExportFit& fit_of(const std::vector<ExportFit>& fits, const std::string& runtime) {
  for (const auto& f : fits)
    if (f.runtime == runtime) return f;
  throw std::logic_error("no runtime " + runtime);
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("recipes resolve by name, NAME.yaml or configs/NAME.yaml, and unknown names list the bundled ones", "[recipe]") {
  const std::string file = test::repo_path("configs/w4a16-rtn.yaml");
  CHECK(resolve_recipe(file) == file);
  for (const char* spelling : {"w4a16-rtn", "w4a16-rtn.yaml", "configs/w4a16-rtn.yaml", "/no/such/dir/w4a16-rtn.yaml"})
    CHECK(std::filesystem::equivalent(resolve_recipe(spelling), file));
  CHECK(load_recipe(kDefaultRecipe).name == kDefaultRecipe);
  try {
    resolve_recipe("w5a16-magic");
    FAIL("an unknown recipe was accepted");
  } catch (const std::invalid_argument& e) {
    CHECK(contains(e.what(), "w5a16-magic"));
    CHECK(contains(e.what(), "w4a16-gptq"));  // the list of bundled names
  }
  CHECK(bundled_recipes().size() >= 13);
}

TEST_CASE("what `ptq recipes` says each runtime loads is what the exporters do", "[recipe][export]") {
  const std::string dir = test::make_temp_dir("targets");
  struct Grid {
    const char* name;
    int bits;
    int64_t group;
    bool sym;
  };
  const Grid grids[] = {{"w4g32", 4, 32, true},  {"w4g128", 4, 128, true}, {"w4g32a", 4, 32, false},
                        {"w8g128", 8, 128, true}, {"w8pc", 8, kPerChannel, true}, {"w3g128", 3, 128, true},
                        {"w6pc", 6, kPerChannel, true}};
  for (const Grid& g : grids) {
    DYNAMIC_SECTION(g.name) {
      Recipe r = load_recipe("w4a16-rtn");
      r.weights.bits = g.bits;
      r.weights.group_size = g.group;
      r.weights.sym = g.sym;
      const auto fits = export_fits(r);
      const std::string q = quantize_with(r, dir + "/" + g.name);

      const ExportFit& llama = fit_of(fits, "llama.cpp");
      const bool gguf = succeeds([&] { export_gguf(q, dir + "/" + g.name + ".gguf", {}); });
      CHECK(gguf == (llama.how.rfind("GGUF", 0) == 0));  // loads as is only when no flag is named
      if (!gguf && contains(llama.how, "--group-size 32")) {  // the advice works
        Recipe g32 = r;
        g32.weights.group_size = 32;
        const std::string q32 = quantize_with(g32, dir + "/" + g.name + "-g32");
        CHECK(succeeds([&] { export_gguf(q32, dir + "/" + g.name + "-g32.gguf", {}); }));
      }

      const ExportFit& vllm = fit_of(fits, "vLLM / transformers");
      PackedExportOptions o;
      const bool gptq = succeeds([&] { export_gptq(q, dir + "/" + g.name + "-gptq", o); });
      const bool ct = succeeds([&] { export_compressed_tensors(q, dir + "/" + g.name + "-ct", o); });
      CHECK(gptq == (vllm.loads && contains(vllm.how, "GPTQ")));
      CHECK(ct == (vllm.loads && contains(vllm.how, "compressed-tensors")));
      CHECK(vllm.loads == (gptq || ct));
      CHECK(fit_of(fits, "ptq runner").loads);
    }
  }
}
