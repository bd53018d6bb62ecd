/*
 * fb_sensor_node.c - a minimal sensor node on top of fb_proto (portable C99; see fb_sensor_node.ino
 * for the Arduino wiring). It announces itself with a boot HELLO, streams 32-sample blocks of a 3-axis
 * accelerometer, sends a HEARTBEAT every second and answers HELLO_REQUEST, PING, TIME_SYNC and CONFIG.
 *
 * The board supplies five hooks (UART, clock, sensor, RNG); everything else is here.
 * Build with the library: cc -std=c99 -c fb_sensor_node.c ../fb_proto.c
 */
#include <stdint.h>

#include "../fb_proto.h"

/* ---- board hooks (implemented per platform) ---- */
void board_uart_write(const uint8_t *data, size_t len);
int board_uart_read(void); /* next received byte, or -1 when none is waiting */
uint64_t board_micros64(void);
void board_read_accel(int16_t xyz[3]); /* raw counts; scale below */
uint32_t board_random32(void);

#define BLOCK 32
#define SCALE_G_PER_LSB (1.0f / 4096.0f) /* a +-8 g range at 4096 LSB/g */

static fb_encoder_t enc;
static fb_decoder_t dec;
static uint8_t wire[FB_WIRE_CAP(FB_BODY_CAP)];
static int16_t block[BLOCK * 3];
static uint16_t n_in_block;
static uint64_t block_t_us, next_sample_us, next_heartbeat_us;
static uint32_t period_us = 1000; /* 1 kHz */
static uint32_t boot_id, dropped;
static const uint8_t uid[8] = {0x53, 0x4e, 0x30, 0x30, 0x30, 0x30, 0x30, 0x31};
static fb_sensor_t accel = {0, 1 /* accelerometer */, FB_I16, 3, 1000.0f, SCALE_G_PER_LSB, 0.0f, "g"};

static void send_hello(uint8_t flags) {
    fb_hello_t h;
    size_t n;
    h.fw_major = 1; h.fw_minor = 0; h.fw_patch = 0;
    h.boot_id = boot_id;
    h.t_us = board_micros64();
    h.uid = uid; h.uid_len = sizeof uid;
    h.sensors = &accel; h.n_sensors = 1;
    n = fb_encode_hello(&enc, &h, flags, wire, sizeof wire);
    if (n) board_uart_write(wire, n);
}

void node_setup(void) {
    static const uint8_t delimiter = 0;
    fb_encoder_init(&enc);
    fb_decoder_init(&dec);
    boot_id = board_random32();
    board_uart_write(&delimiter, 1); /* end whatever the line held before the reset */
    send_hello(FB_FLAG_BOOT);
    next_sample_us = board_micros64() + period_us;
    next_heartbeat_us = next_sample_us;
}

static void handle(const fb_frame_t *f) {
    size_t n = 0;
    if (f->type == FB_HELLO_REQUEST) {
        send_hello(0);
    } else if (f->type == FB_PING) {
        fb_ping_t p;
        if (fb_parse_ping(f, &p) == FB_OK) n = fb_encode_pong(&enc, p.nonce, board_micros64(), wire, sizeof wire);
    } else if (f->type == FB_TIME_SYNC) {
        fb_time_sync_t t;
        if (fb_parse_time_sync(f, &t) == FB_OK) n = fb_encode_pong(&enc, t.nonce, board_micros64(), wire, sizeof wire);
    } else if (f->type == FB_CONFIG) {
        fb_config_t c;
        if (fb_parse_config(f, &c) == FB_OK && c.sensor_id == 0 && c.rate_hz >= 10.0f && c.rate_hz <= 4000.0f) {
            period_us = (uint32_t)(1e6f / c.rate_hz + 0.5f);
            accel.rate_hz = 1e6f / (float)period_us; /* announce the rate actually used */
            n_in_block = 0;
            send_hello(0);
        } else {
            n = fb_encode_error(&enc, 2, "CONFIG rejected: rate out of 10..4000 Hz", wire, sizeof wire);
        }
    }
    if (n) board_uart_write(wire, n);
}

void node_loop(void) {
    int c;
    uint64_t now = board_micros64();
    fb_frame_t f;
    while ((c = board_uart_read()) >= 0) {
        if (fb_decoder_push(&dec, (uint8_t)c, &f) == FB_OK) handle(&f);
    }
    if (now >= next_sample_us) {
        if (n_in_block == 0) block_t_us = next_sample_us;
        board_read_accel(&block[n_in_block * 3]);
        next_sample_us += period_us;
        if (++n_in_block == BLOCK) {
            size_t n = fb_encode_samples(&enc, 0, FB_I16, 3, BLOCK, block_t_us, block, wire, sizeof wire);
            if (n) board_uart_write(wire, n);
            else dropped += BLOCK;
            n_in_block = 0;
        }
    }
    if (now >= next_heartbeat_us) {
        size_t n = fb_encode_heartbeat(&enc, now, dropped, wire, sizeof wire);
        if (n) board_uart_write(wire, n);
        next_heartbeat_us = now + 1000000u;
    }
}
