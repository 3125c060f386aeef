/* deltahw C driver: register-level access to a deltahw accelerator core from a soft CPU or a
 * microcontroller that sits next to it on a bus.
 *
 * No dynamic allocation, no libc beyond <stdint.h>/<stddef.h>. The platform provides a small HAL:
 * 32-bit register reads and writes on the core's bus (word addresses from deltahw_regs.h, which is
 * generated from deltahw.regmap) and access to the core's input and output streams (one beat at a
 * time, as little-endian arrays of 32-bit words; on an SoC these are typically FIFO ports next to
 * the register block). Beat sizes and element widths come from deltahw_config.h, generated for the
 * model the bitstream was built for (firmware/gen_headers.py).
 */
#ifndef DELTAHW_H
#define DELTAHW_H

#include <stddef.h>
#include <stdint.h>

#include "deltahw_config.h"
#include "deltahw_regs.h"

/* Return codes. */
#define DELTAHW_OK 0
#define DELTAHW_ERR_ID (-1)       /* the ID register is not 'DHW1': no accelerator at this address */
#define DELTAHW_ERR_VERSION (-2)  /* register map version differs from this driver's */
#define DELTAHW_ERR_SHAPE (-3)    /* the core was built for another network shape */
#define DELTAHW_ERR_ARG (-4)      /* an argument is out of range */
#define DELTAHW_ERR_STREAM (-5)   /* the HAL could not move a beat (timeout in the platform) */
#define DELTAHW_ERR_FRAMING (-6)  /* an output beat had 'last' in the wrong place */

/* Words per stream beat (data bits rounded up to 32-bit words; the flag is passed separately). */
#define DELTAHW_IN_WORDS ((DELTAHW_ENC_WIDTH * DELTAHW_ACT_BITS + 31) / 32)
#define DELTAHW_OUT_WORDS ((DELTAHW_ACT_WIDTH * DELTAHW_ACT_BITS + 31) / 32)
#define DELTAHW_IN_BEATS ((DELTAHW_INPUT_SIZE + DELTAHW_ENC_WIDTH - 1) / DELTAHW_ENC_WIDTH)
#define DELTAHW_OUT_BEATS ((DELTAHW_OUTPUT_WIDTH + DELTAHW_ACT_WIDTH - 1) / DELTAHW_ACT_WIDTH)

typedef struct deltahw_hal {
    uint32_t (*read)(void *ctx, uint32_t addr);
    void (*write)(void *ctx, uint32_t addr, uint32_t value);
    /* Send one input beat (DELTAHW_IN_WORDS words) with its 'first' flag; 0 on success. */
    int (*push_input)(void *ctx, const uint32_t *words, int first);
    /* Receive one output beat (DELTAHW_OUT_WORDS words) and its 'last' flag; 0 on success. */
    int (*pop_output)(void *ctx, uint32_t *words, int *last);
    void *ctx;
} deltahw_hal_t;

typedef struct deltahw {
    deltahw_hal_t hal;
    uint32_t input_size, hidden_size, num_layers, output_size, lanes, act_width;
} deltahw_t;

typedef struct deltahw_counters {
    uint32_t cycles_last, cycles_total, stall_total, timesteps, mac_busy, fired_head_last;
    uint32_t fired_x_last[DELTAHW_NUM_LAYERS], fired_h_last[DELTAHW_NUM_LAYERS]; /* FIRED_LAST fields */
} deltahw_counters_t;

/* Check ID, VERSION and the network shape against deltahw_config.h. */
int deltahw_init(deltahw_t *dev, const deltahw_hal_t *hal);
/* Write `count` values to one lane's weight (kind = DELTAHW_PARAM_KIND_WEIGHT) or bias memory,
 * starting at word address `addr`. */
int deltahw_load_lane(deltahw_t *dev, uint32_t kind, uint32_t lane, uint32_t addr,
                      const int32_t *values, uint32_t count);
/* Load a whole model: `weights` is DELTAHW_WEIGHT_DEPTH x DELTAHW_LANES values and `biases` is
 * DELTAHW_ACC_DEPTH x DELTAHW_LANES values, lane-major (lane 0's column first), as in
 * deltahw_params.h. The core must be idle. */
int deltahw_load_params(deltahw_t *dev, const int32_t *weights, const int32_t *biases);
/* Thresholds in LSBs of the act format: one per layer for x and h, one for the head. */
int deltahw_set_thresholds(deltahw_t *dev, const uint32_t *theta_x, const uint32_t *theta_h,
                           uint32_t theta_head);
/* One timestep: DELTAHW_INPUT_SIZE inputs in, DELTAHW_OUTPUT_WIDTH outputs out (act format).
 * `first` = 1 starts a new sequence. */
int deltahw_step(deltahw_t *dev, const int32_t *x, int first, int32_t *y);
/* A whole sequence of `steps` timesteps (x: steps x I, y: steps x W, row-major). */
int deltahw_run(deltahw_t *dev, const int32_t *x, uint32_t steps, int32_t *y);
int deltahw_clear_counters(deltahw_t *dev);
int deltahw_read_counters(deltahw_t *dev, deltahw_counters_t *out);

#endif /* DELTAHW_H */
