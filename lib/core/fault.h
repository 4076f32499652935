// Test-only fault injection, so that tests can interrupt a run at an exact point (quantize --resume is tested by
// killing it there). PTQ_TEST_SIGNAL_AT="<point>:<n>[:KILL|INT|TERM]" sends the process the signal (default
// SIGKILL) the n-th time (1-based) it passes fault_point(<point>). Unset (always, outside tests), fault_point costs
// one comparison.
#pragma once

namespace ptq {

// Points in use: "module" (a quantized module's tensors were spooled), "layer" (a layer's resume state was
// saved), "commit" (every tensor is written; the output directory is about to be committed).
void fault_point(const char* point);

}  // namespace ptq
