// Verilator harness for the firmware driver: implements the driver's HAL (register reads and
// writes, input and output stream beats) on a simulated deltahw_core, then runs the C driver the
// way firmware would: init (ID/VERSION/shape), load every weight and bias at run time (the RTL's
// power-on memories are all zero), set thresholds, run a real sequence, read the counters. Every
// output is compared with the golden model's (deltahw_vectors.h), and the cycle counter with the
// cycle model's total. Prints "N passed, M failed" and exits non-zero on any mismatch.
#include <cstdio>
#include <cstdint>

// Port names: Verilator escapes the double underscore of Amaranth's flattened names
// (bus__addr, i__valid, o__payload, ...) as "___05F".
#include "Vdeltahw_core.h"
#include "verilated.h"

extern "C" {
#include "deltahw.h"
}
#include "deltahw_params.h"
#include "deltahw_vectors.h"

namespace {

constexpr uint64_t kStreamTimeout = 2000000;  // cycles a beat may wait before the HAL gives up

struct Sim {
    Vdeltahw_core *top;
    uint64_t cycles = 0;
    uint64_t reg_reads = 0, reg_writes = 0, in_beats = 0, out_beats = 0;

    void tick() {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
        cycles++;
    }
};

template <typename T>
void set_sig(T &sig, const uint32_t *w, int nw) {
    uint64_t v = w[0];
    if (nw > 1 && sizeof(T) > 4) v |= static_cast<uint64_t>(w[1]) << 32;
    sig = static_cast<T>(v);
}
template <std::size_t N>
void set_sig(VlWide<N> &sig, const uint32_t *w, int nw) {
    for (std::size_t i = 0; i < N; i++) sig[i] = static_cast<int>(i) < nw ? w[i] : 0;
}
template <typename T>
void get_sig(const T &sig, uint32_t *w, int nw) {
    uint64_t v = static_cast<uint64_t>(sig);
    for (int i = 0; i < nw; i++) w[i] = i < 2 ? static_cast<uint32_t>(v >> (32 * i)) : 0;
}
template <std::size_t N>
void get_sig(const VlWide<N> &sig, uint32_t *w, int nw) {
    for (int i = 0; i < nw; i++) w[i] = static_cast<std::size_t>(i) < N ? sig[i] : 0;
}

constexpr int kInBits = DELTAHW_ENC_WIDTH * DELTAHW_ACT_BITS;
constexpr int kOutBits = DELTAHW_ACT_WIDTH * DELTAHW_ACT_BITS;
constexpr int kInPayloadWords = (kInBits + 1 + 31) / 32;
constexpr int kOutPayloadWords = (kOutBits + 1 + 31) / 32;

uint32_t hal_read(void *ctx, uint32_t addr) {
    Sim *s = static_cast<Sim *>(ctx);
    s->top->bus___05Faddr = addr;
    s->top->bus___05Fr_en = 1;
    s->tick();  // the read is taken on this edge; data is valid after it
    s->top->bus___05Fr_en = 0;
    s->top->eval();
    s->reg_reads++;
    return s->top->bus___05Fr_data;
}

void hal_write(void *ctx, uint32_t addr, uint32_t value) {
    Sim *s = static_cast<Sim *>(ctx);
    s->top->bus___05Faddr = addr;
    s->top->bus___05Fw_data = value;
    s->top->bus___05Fw_en = 1;
    s->tick();
    s->top->bus___05Fw_en = 0;
    s->reg_writes++;
}

int hal_push(void *ctx, const uint32_t *words, int first) {
    Sim *s = static_cast<Sim *>(ctx);
    uint32_t payload[kInPayloadWords] = {0};
    for (int i = 0; i < DELTAHW_IN_WORDS; i++) payload[i] = words[i];
    if (first) payload[kInBits / 32] |= 1u << (kInBits % 32);
    set_sig(s->top->i___05Fpayload, payload, kInPayloadWords);
    s->top->i___05Fvalid = 1;
    for (uint64_t n = 0; n < kStreamTimeout; n++) {
        s->top->eval();
        bool taken = s->top->i___05Fready;
        s->tick();
        if (taken) {
            s->top->i___05Fvalid = 0;
            s->in_beats++;
            return 0;
        }
    }
    s->top->i___05Fvalid = 0;
    return -1;
}

int hal_pop(void *ctx, uint32_t *words, int *last) {
    Sim *s = static_cast<Sim *>(ctx);
    uint32_t payload[kOutPayloadWords];
    s->top->o___05Fready = 1;
    for (uint64_t n = 0; n < kStreamTimeout; n++) {
        s->top->eval();
        if (s->top->o___05Fvalid) {
            get_sig(s->top->o___05Fpayload, payload, kOutPayloadWords);
            s->tick();
            s->top->o___05Fready = 0;
            for (int i = 0; i < DELTAHW_OUT_WORDS; i++) words[i] = payload[i];
            if (kOutBits % 32) words[DELTAHW_OUT_WORDS - 1] &= (1u << (kOutBits % 32)) - 1u;
            *last = (payload[kOutBits / 32] >> (kOutBits % 32)) & 1u;
            s->out_beats++;
            return 0;
        }
        s->tick();
    }
    s->top->o___05Fready = 0;
    return -1;
}

}  // namespace

static int32_t outputs[DELTAHW_TEST_STEPS * DELTAHW_OUTPUT_WIDTH];

int main(int argc, char **argv) {
    Verilated::commandArgs(argc, argv);
    Sim sim;
    sim.top = new Vdeltahw_core;
    sim.top->rst = 1;
    for (int i = 0; i < 8; i++) sim.tick();
    sim.top->rst = 0;
    sim.tick();

    deltahw_hal_t hal = {hal_read, hal_write, hal_push, hal_pop, &sim};
    deltahw_t dev;
    int passed = 0, failed = 0;
    int rc = deltahw_init(&dev, &hal);
    if (rc) {
        std::printf("deltahw_init failed: %d\n", rc);
        return 1;
    }
    rc = deltahw_load_params(&dev, deltahw_weights, deltahw_biases);
    rc = rc ? rc : deltahw_set_thresholds(&dev, deltahw_theta_x, deltahw_theta_h,
                                          DELTAHW_THETA_HEAD);
    rc = rc ? rc : deltahw_clear_counters(&dev);
    uint64_t load_cycles = sim.cycles;
    rc = rc ? rc : deltahw_run(&dev, deltahw_test_x, DELTAHW_TEST_STEPS, outputs);
    if (rc) {
        std::printf("driver call failed: %d\n", rc);
        return 1;
    }
    for (uint32_t t = 0; t < DELTAHW_TEST_STEPS; t++) {
        bool ok = true;
        for (uint32_t k = 0; k < DELTAHW_OUTPUT_WIDTH; k++) {
            int32_t got = outputs[t * DELTAHW_OUTPUT_WIDTH + k];
            int32_t want = deltahw_test_y[t * DELTAHW_OUTPUT_WIDTH + k];
            if (got != want) {
                if (ok) std::printf("timestep %u output %u: got %d, golden %d\n", t, k, got, want);
                ok = false;
            }
        }
        ok ? passed++ : failed++;
    }
    deltahw_counters_t cnt;
    deltahw_read_counters(&dev, &cnt);
    bool cyc_ok = cnt.cycles_total == DELTAHW_TEST_CYCLES_TOTAL && cnt.timesteps == DELTAHW_TEST_STEPS;
    cyc_ok ? passed++ : failed++;
    std::printf("parameters loaded in %llu cycles (%llu register writes); %u timesteps, core counted "
                "%u compute cycles (cycle model %u), %u stall cycles\n",
                static_cast<unsigned long long>(load_cycles),
                static_cast<unsigned long long>(sim.reg_writes), cnt.timesteps, cnt.cycles_total,
                DELTAHW_TEST_CYCLES_TOTAL, cnt.stall_total);
    std::printf("%d passed, %d failed\n", passed, failed);
    sim.top->final();
    delete sim.top;
    return failed ? 1 : 0;
}
