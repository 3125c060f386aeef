/* deltahw C driver, see deltahw.h. */
#include "deltahw.h"

#define FIELD(reg, f, v) (((uint32_t)(v) << DELTAHW_##reg##_##f##_SHIFT) & DELTAHW_##reg##_##f##_MASK)
#define GET(reg, f, w) (((w) & DELTAHW_##reg##_##f##_MASK) >> DELTAHW_##reg##_##f##_SHIFT)

int deltahw_init(deltahw_t *dev, const deltahw_hal_t *hal)
{
    uint32_t s0, s1;
    dev->hal = *hal;
    if (hal->read(hal->ctx, DELTAHW_REG_ID) != DELTAHW_ID_MAGIC)
        return DELTAHW_ERR_ID;
    if (hal->read(hal->ctx, DELTAHW_REG_VERSION) != DELTAHW_REGMAP_VERSION)
        return DELTAHW_ERR_VERSION;
    s0 = hal->read(hal->ctx, DELTAHW_REG_SHAPE0);
    s1 = hal->read(hal->ctx, DELTAHW_REG_SHAPE1);
    dev->input_size = GET(SHAPE0, INPUT_SIZE, s0);
    dev->hidden_size = GET(SHAPE0, HIDDEN_SIZE, s0);
    dev->num_layers = GET(SHAPE1, NUM_LAYERS, s1);
    dev->output_size = GET(SHAPE1, OUTPUT_SIZE, s1);
    dev->lanes = GET(SHAPE1, LANES, s1);
    dev->act_width = 1u << GET(SHAPE1, ACT_WIDTH_LOG2, s1);
    if (dev->input_size != DELTAHW_INPUT_SIZE || dev->hidden_size != DELTAHW_HIDDEN_SIZE ||
        dev->num_layers != DELTAHW_NUM_LAYERS || dev->output_size != DELTAHW_OUTPUT_SIZE ||
        dev->lanes != DELTAHW_LANES || dev->act_width != DELTAHW_ACT_WIDTH)
        return DELTAHW_ERR_SHAPE;
    return DELTAHW_OK;
}

int deltahw_load_lane(deltahw_t *dev, uint32_t kind, uint32_t lane, uint32_t addr,
                      const int32_t *values, uint32_t count)
{
    uint32_t i;
    if (lane >= DELTAHW_LANES || kind > 1)
        return DELTAHW_ERR_ARG;
    dev->hal.write(dev->hal.ctx, DELTAHW_REG_PARAM_SEL,
                   FIELD(PARAM_SEL, KIND, kind) | FIELD(PARAM_SEL, LANE, lane));
    dev->hal.write(dev->hal.ctx, DELTAHW_REG_PARAM_ADDR, addr);
    for (i = 0; i < count; i++) /* PARAM_ADDR increments after every PARAM_DATA write */
        dev->hal.write(dev->hal.ctx, DELTAHW_REG_PARAM_DATA, (uint32_t)values[i]);
    return DELTAHW_OK;
}

int deltahw_load_params(deltahw_t *dev, const int32_t *weights, const int32_t *biases)
{
    uint32_t lane;
    int rc;
    for (lane = 0; lane < DELTAHW_LANES; lane++) {
        rc = deltahw_load_lane(dev, DELTAHW_PARAM_KIND_WEIGHT, lane, 0,
                               weights + (size_t)lane * DELTAHW_WEIGHT_DEPTH, DELTAHW_WEIGHT_DEPTH);
        if (rc)
            return rc;
        rc = deltahw_load_lane(dev, DELTAHW_PARAM_KIND_BIAS, lane, 0,
                               biases + (size_t)lane * DELTAHW_ACC_DEPTH, DELTAHW_ACC_DEPTH);
        if (rc)
            return rc;
    }
    return DELTAHW_OK;
}

int deltahw_set_thresholds(deltahw_t *dev, const uint32_t *theta_x, const uint32_t *theta_h,
                           uint32_t theta_head)
{
    static const uint8_t x_addr[DELTAHW_NUM_LAYERS] = DELTAHW_THETA_X_ADDRS;
    static const uint8_t h_addr[DELTAHW_NUM_LAYERS] = DELTAHW_THETA_H_ADDRS;
    uint32_t l;
    for (l = 0; l < DELTAHW_NUM_LAYERS; l++) {
        dev->hal.write(dev->hal.ctx, x_addr[l], theta_x[l]);
        dev->hal.write(dev->hal.ctx, h_addr[l], theta_h[l]);
    }
    dev->hal.write(dev->hal.ctx, DELTAHW_REG_THETA_HEAD, theta_head);
    return DELTAHW_OK;
}

/* Element fields are at most 32 bits wide, so one spans at most two words: pack and unpack whole
 * fields with shifts (a loop over bits costs a soft CPU ~10 cycles per bit). */
static void put_bits(uint32_t *words, uint32_t bit, uint32_t value, uint32_t nbits)
{
    const uint32_t w = bit / 32, s = bit % 32;
    if (nbits < 32)
        value &= (1u << nbits) - 1u;
    words[w] |= value << s;
    if (s != 0 && s + nbits > 32)
        words[w + 1] |= value >> (32 - s);
}

static int32_t get_bits_signed(const uint32_t *words, uint32_t bit, uint32_t nbits)
{
    const uint32_t w = bit / 32, s = bit % 32;
    uint32_t v = words[w] >> s;
    if (s != 0 && s + nbits > 32)
        v |= words[w + 1] << (32 - s);
    if (nbits < 32) {
        v &= (1u << nbits) - 1u;
        if (v & (1u << (nbits - 1)))
            v |= ~0u << nbits; /* sign-extend */
    }
    return (int32_t)v;
}

int deltahw_step(deltahw_t *dev, const int32_t *x, int first, int32_t *y)
{
    uint32_t words[DELTAHW_IN_WORDS > DELTAHW_OUT_WORDS ? DELTAHW_IN_WORDS : DELTAHW_OUT_WORDS];
    uint32_t beat, e, k;
    int last;
    const uint32_t mask = (DELTAHW_ACT_BITS >= 32) ? 0xFFFFFFFFu : ((1u << DELTAHW_ACT_BITS) - 1u);
    for (beat = 0; beat < DELTAHW_IN_BEATS; beat++) {
        for (k = 0; k < DELTAHW_IN_WORDS; k++)
            words[k] = 0;
        for (e = 0; e < DELTAHW_ENC_WIDTH; e++) {
            uint32_t idx = beat * DELTAHW_ENC_WIDTH + e;
            if (idx < DELTAHW_INPUT_SIZE) /* elements past I in the last beat are ignored */
                put_bits(words, e * DELTAHW_ACT_BITS, (uint32_t)x[idx] & mask, DELTAHW_ACT_BITS);
        }
        if (dev->hal.push_input(dev->hal.ctx, words, first && beat == 0))
            return DELTAHW_ERR_STREAM;
    }
    for (beat = 0; beat < DELTAHW_OUT_BEATS; beat++) {
        if (dev->hal.pop_output(dev->hal.ctx, words, &last))
            return DELTAHW_ERR_STREAM;
        if ((beat == DELTAHW_OUT_BEATS - 1) != (last != 0))
            return DELTAHW_ERR_FRAMING;
        for (e = 0; e < DELTAHW_ACT_WIDTH; e++) {
            uint32_t idx = beat * DELTAHW_ACT_WIDTH + e;
            if (idx < DELTAHW_OUTPUT_WIDTH)
                y[idx] = get_bits_signed(words, e * DELTAHW_ACT_BITS, DELTAHW_ACT_BITS);
        }
    }
    return DELTAHW_OK;
}

int deltahw_run(deltahw_t *dev, const int32_t *x, uint32_t steps, int32_t *y)
{
    uint32_t t;
    int rc;
    for (t = 0; t < steps; t++) {
        rc = deltahw_step(dev, x + (size_t)t * DELTAHW_INPUT_SIZE, t == 0,
                          y + (size_t)t * DELTAHW_OUTPUT_WIDTH);
        if (rc)
            return rc;
    }
    return DELTAHW_OK;
}

int deltahw_clear_counters(deltahw_t *dev)
{
    dev->hal.write(dev->hal.ctx, DELTAHW_REG_CTRL, FIELD(CTRL, CLEAR_COUNTERS, 1));
    return DELTAHW_OK;
}

int deltahw_read_counters(deltahw_t *dev, deltahw_counters_t *out)
{
    static const uint8_t fired_addr[DELTAHW_NUM_LAYERS] = DELTAHW_FIRED_LAST_ADDRS;
    uint32_t l, w;
    void *c = dev->hal.ctx;
    out->cycles_last = dev->hal.read(c, DELTAHW_REG_CYCLES_LAST);
    out->cycles_total = dev->hal.read(c, DELTAHW_REG_CYCLES_TOTAL);
    out->stall_total = dev->hal.read(c, DELTAHW_REG_STALL_TOTAL);
    out->timesteps = dev->hal.read(c, DELTAHW_REG_TIMESTEPS);
    out->mac_busy = dev->hal.read(c, DELTAHW_REG_MAC_BUSY);
    out->fired_head_last = dev->hal.read(c, DELTAHW_REG_FIRED_HEAD_LAST);
    for (l = 0; l < DELTAHW_NUM_LAYERS; l++) {
        w = dev->hal.read(c, fired_addr[l]);
        out->fired_x_last[l] = GET(FIRED_LAST0, X, w);
        out->fired_h_last[l] = GET(FIRED_LAST0, H, w);
    }
    return DELTAHW_OK;
}
