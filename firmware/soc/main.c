/* deltahw SoC firmware: the C driver (firmware/deltahw.c, unchanged) on the VexRiscv CPU of the
 * LiteX SoC, with a HAL of plain loads and stores on the core's Wishbone window
 * (deltahw/soc/wishbone.py). It checks the core (deltahw_init), loads the weights and biases
 * from ROM (DELTAHW_SOC_LOAD=1; with 0 the core's block RAMs hold them from the bitstream),
 * sets the thresholds, streams a test sequence from ROM one timestep at a time and prints every
 * output, the core's cycle counters and the CPU cycles each driver call took (LiteX timer0
 * uptime counter). Output lines (parsed by deltahw.soc.sim):
 *
 *   DELTAHW-SOC steps=T width=W load=0|1
 *   INIT rc=0
 *   LOAD rc=0 cpu=C words=N          (only with DELTAHW_SOC_LOAD=1)
 *   STEP t cpu=C acc=A y=v0,v1,...   (A = CYCLES_LAST read after the step)
 *   COUNTERS total=... timesteps=... stall=... mac_busy=...
 *   DONE rc=0 uptime=U               (U = CPU cycles since reset)
 */
#include <stdint.h>

#include "deltahw.h"
#include "deltahw_params.h"
#include "deltahw_soc.h"
#include "deltahw_soc_regs.h"
#include "deltahw_vectors.h"

#ifndef DELTAHW_SOC_LOAD
#define DELTAHW_SOC_LOAD 1
#endif
/* Polls of the stream status before a HAL call gives up (the driver then returns an error). */
#define STREAM_POLLS 1000000u

typedef char in_words_match[(DELTAHW_IN_WORDS == DELTAHW_SOC_IN_WORDS) ? 1 : -1];
typedef char out_words_match[(DELTAHW_OUT_WORDS == DELTAHW_SOC_OUT_WORDS) ? 1 : -1];

#define CSR(addr) (*(volatile uint32_t *)(addr))
#define DH ((volatile uint32_t *)DELTAHW_SOC_BASE)

/* ---- console (LiteX UART) and time (LiteX timer0 uptime, CPU clock cycles) ---------------- */
static void putch(char c)
{
    while (CSR(CSR_UART_TXFULL_ADDR) & 1u)
        ;
    CSR(CSR_UART_RXTX_ADDR) = (uint32_t)(unsigned char)c;
}

static void puts_(const char *s)
{
    while (*s)
        putch(*s++);
}

static void putu(uint32_t v)
{
    char buf[11];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    while (n)
        putch(buf[--n]);
}

static void puti(int32_t v)
{
    if (v < 0) {
        putch('-');
        putu((uint32_t)0 - (uint32_t)v);
    } else {
        putu((uint32_t)v);
    }
}

static uint32_t uptime(void)
{
    CSR(CSR_TIMER0_UPTIME_LATCH_ADDR) = 1u;
    return CSR(CSR_TIMER0_UPTIME_CYCLES_ADDR + 4u); /* low word: a run is far below 2^32 cycles */
}

/* ---- HAL on the Wishbone window ------------------------------------------------------------ */
static uint32_t hal_read(void *ctx, uint32_t addr)
{
    (void)ctx;
    return DH[addr];
}

static void hal_write(void *ctx, uint32_t addr, uint32_t value)
{
    (void)ctx;
    DH[addr] = value;
}

static int hal_push(void *ctx, const uint32_t *words, int first)
{
    uint32_t k, n = 0;
    (void)ctx;
    while (DH[DELTAHW_SOC_REG_STREAM_STATUS] & DELTAHW_SOC_STREAM_STATUS_IN_FULL_MASK)
        if (++n == STREAM_POLLS)
            return -1;
    for (k = 0; k < DELTAHW_SOC_IN_WORDS; k++)
        DH[DELTAHW_SOC_REG_IN_DATA0 + k] = words[k];
    DH[DELTAHW_SOC_REG_IN_PUSH] = first ? DELTAHW_SOC_IN_PUSH_FIRST_MASK : 0u;
    return 0;
}

static int hal_pop(void *ctx, uint32_t *words, int *last)
{
    uint32_t k, s, n = 0;
    (void)ctx;
    while (!((s = DH[DELTAHW_SOC_REG_STREAM_STATUS]) & DELTAHW_SOC_STREAM_STATUS_OUT_VALID_MASK))
        if (++n == STREAM_POLLS)
            return -1;
    for (k = 0; k < DELTAHW_SOC_OUT_WORDS; k++)
        words[k] = DH[DELTAHW_SOC_REG_OUT_DATA0 + k];
    *last = (s & DELTAHW_SOC_STREAM_STATUS_OUT_LAST_MASK) != 0u;
    DH[DELTAHW_SOC_REG_OUT_POP] = 0u;
    return 0;
}

static void finish(int rc)
{
    puts_("DONE rc=");
    puti(rc);
    puts_(" uptime=");
    putu(uptime());
    puts_("\n");
#ifdef CSR_SIM_FINISH_FINISH_ADDR
    CSR(CSR_SIM_FINISH_FINISH_ADDR) = 1u;
#endif
}

static int32_t y[DELTAHW_OUTPUT_WIDTH];

int main(void)
{
    static const deltahw_hal_t hal = {hal_read, hal_write, hal_push, hal_pop, 0};
    deltahw_t dev;
    deltahw_counters_t cnt;
    uint32_t t, k, t0, t1, acc;
    int rc;

    puts_("DELTAHW-SOC steps=");
    putu(DELTAHW_TEST_STEPS);
    puts_(" width=");
    putu(DELTAHW_OUTPUT_WIDTH);
    puts_(" load=");
    putu(DELTAHW_SOC_LOAD);
    puts_("\nINIT rc=");
    rc = deltahw_init(&dev, &hal);
    puti(rc);
    puts_("\n");
    if (rc) {
        finish(rc);
        return rc;
    }
#if DELTAHW_SOC_LOAD
    t0 = uptime();
    rc = deltahw_load_params(&dev, deltahw_weights, deltahw_biases);
    t1 = uptime();
    puts_("LOAD rc=");
    puti(rc);
    puts_(" cpu=");
    putu(t1 - t0);
    puts_(" words=");
    putu(DELTAHW_LANES * (DELTAHW_WEIGHT_DEPTH + DELTAHW_ACC_DEPTH));
    puts_("\n");
    if (rc) {
        finish(rc);
        return rc;
    }
#endif
    rc = deltahw_set_thresholds(&dev, deltahw_theta_x, deltahw_theta_h, DELTAHW_THETA_HEAD);
    rc = rc ? rc : deltahw_clear_counters(&dev);
    for (t = 0; !rc && t < DELTAHW_TEST_STEPS; t++) {
        t0 = uptime();
        rc = deltahw_step(&dev, deltahw_test_x + t * DELTAHW_INPUT_SIZE, t == 0, y);
        t1 = uptime();
        acc = hal_read(0, DELTAHW_REG_CYCLES_LAST);
        puts_("STEP ");
        putu(t);
        puts_(" cpu=");
        putu(t1 - t0);
        puts_(" acc=");
        putu(acc);
        puts_(" rc=");
        puti(rc);
        puts_(" y=");
        for (k = 0; k < DELTAHW_OUTPUT_WIDTH; k++) {
            if (k)
                putch(',');
            puti(y[k]);
        }
        puts_("\n");
    }
    if (!rc) {
        deltahw_read_counters(&dev, &cnt);
        puts_("COUNTERS total=");
        putu(cnt.cycles_total);
        puts_(" timesteps=");
        putu(cnt.timesteps);
        puts_(" stall=");
        putu(cnt.stall_total);
        puts_(" mac_busy=");
        putu(cnt.mac_busy);
        puts_("\n");
    }
    finish(rc);
    return rc;
}
