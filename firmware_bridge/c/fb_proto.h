/*
 * fb_proto.h - firmware_bridge serial protocol, microcontroller side (C99, no malloc, fixed buffers).
 *
 * Frames: COBS-encoded body followed by 0x00. Body = header (version, type, flags, counter u16 LE)
 * + payload + CRC-32 (ISO-HDLC, as zlib.crc32) of header and payload, u32 little-endian.
 * The full specification is docs/serial-protocol.md in the depin-edge-agent repository; the known-answer
 * vectors in tests/vectors/frames/ hold this file and the Python host to the same bytes.
 *
 * Typical use (Arduino, ESP-IDF, Zephyr): one fb_encoder_t for what you send, one fb_decoder_t fed byte
 * by byte from the UART for what the host sends. Every function works on caller-provided memory.
 */
#ifndef FB_PROTO_H
#define FB_PROTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FB_PROTOCOL_VERSION 1u
#define FB_HEADER_SIZE 5u
#define FB_CRC_SIZE 4u
#define FB_MAX_BODY 1024u /* protocol maximum: header + payload + CRC */

/* Buffers may be smaller than the protocol maximum on small MCUs (e.g. -DFB_BODY_CAP=256 on an AVR). */
#ifndef FB_BODY_CAP
#define FB_BODY_CAP FB_MAX_BODY
#endif
#define FB_WIRE_CAP(body) ((body) + (body) / 254u + 2u) /* COBS worst case + delimiter */

/* Frame types: 0x01-0x7F MCU -> host, 0x80-0xFF host -> MCU. */
enum fb_type {
    FB_HELLO = 0x01,
    FB_SAMPLES = 0x02,
    FB_HEARTBEAT = 0x03,
    FB_ERROR = 0x04,
    FB_PONG = 0x05,
    FB_CONFIG = 0x81,
    FB_PING = 0x82,
    FB_TIME_SYNC = 0x83,
    FB_HELLO_REQUEST = 0x84
};

#define FB_FLAG_BOOT 0x01u /* on HELLO: first HELLO after boot */

enum fb_format { FB_I16 = 1, FB_I32 = 2, FB_F32 = 3 };

/* Decoder results: > 0 a frame is ready, 0 need more bytes, < 0 a malformed frame was skipped. */
enum fb_result {
    FB_OK = 1,
    FB_NEED_MORE = 0,
    FB_ERR_COBS = -1,
    FB_ERR_LENGTH = -2,
    FB_ERR_CRC = -3,
    FB_ERR_VERSION = -4,
    FB_ERR_TYPE = -5,    /* unknown frame type */
    FB_ERR_PAYLOAD = -6, /* payload too short or out of range for its type */
    FB_ERR_ARG = -7      /* encoder: output buffer too small or an argument out of range */
};

typedef struct {
    uint8_t id, kind, format, channels;
    float rate_hz, scale, offset; /* physical value = raw * scale + offset */
    const char *unit;             /* at most 15 UTF-8 bytes, may be "" */
} fb_sensor_t;

typedef struct {
    uint8_t fw_major, fw_minor, fw_patch;
    uint32_t boot_id; /* differs between consecutive boots: hardware RNG, or a boot counter */
    uint64_t t_us;
    const uint8_t *uid;
    uint8_t uid_len; /* at most 16 */
    const fb_sensor_t *sensors;
    uint8_t n_sensors; /* at most 8 */
} fb_hello_t;

typedef struct {
    uint16_t counter; /* next frame counter */
    uint8_t body[FB_BODY_CAP];
} fb_encoder_t;

typedef struct {
    uint8_t version, type, flags;
    uint16_t counter;
    const uint8_t *payload; /* points into the decoder's buffer: valid until the next fb_decoder_push */
    size_t payload_len;
} fb_frame_t;

typedef struct {
    uint8_t buf[FB_WIRE_CAP(FB_BODY_CAP)];
    size_t len;
    uint8_t overflow;
    uint32_t errors[7]; /* by -result: [1] cobs .. [6] payload */
} fb_decoder_t;

/* Parsed host -> MCU payloads. */
typedef struct { uint8_t sensor_id; float rate_hz; } fb_config_t;
typedef struct { uint32_t nonce; } fb_ping_t;
typedef struct { uint32_t nonce; uint64_t host_time_us; } fb_time_sync_t;

uint32_t fb_crc32(uint32_t crc, const uint8_t *data, size_t len);
/* COBS-encode len bytes; returns encoded length (no delimiter) or 0 when out_cap is too small. */
size_t fb_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap);
/* COBS-decode in place; returns decoded length or -1 when malformed. */
long fb_cobs_decode(uint8_t *buf, size_t len);

void fb_encoder_init(fb_encoder_t *enc);
/* Every encoder writes a complete frame (COBS + 0x00) into out and returns its length, or 0 on error. */
size_t fb_encode_frame(fb_encoder_t *enc, uint8_t type, uint8_t flags, const uint8_t *payload, size_t len,
                       uint8_t *out, size_t out_cap);
size_t fb_encode_hello(fb_encoder_t *enc, const fb_hello_t *hello, uint8_t flags, uint8_t *out, size_t out_cap);
/* values: count * channels values of `format` in native order (int16_t, int32_t or float). */
size_t fb_encode_samples(fb_encoder_t *enc, uint8_t sensor_id, uint8_t format, uint8_t channels, uint16_t count,
                         uint64_t t_us, const void *values, uint8_t *out, size_t out_cap);
size_t fb_encode_heartbeat(fb_encoder_t *enc, uint64_t t_us, uint32_t dropped, uint8_t *out, size_t out_cap);
size_t fb_encode_error(fb_encoder_t *enc, uint16_t code, const char *text, uint8_t *out, size_t out_cap);
size_t fb_encode_pong(fb_encoder_t *enc, uint32_t nonce, uint64_t t_us, uint8_t *out, size_t out_cap);

void fb_decoder_init(fb_decoder_t *dec);
/* Push one received byte; on FB_OK *frame describes the frame (its payload is not yet type-checked). */
int fb_decoder_push(fb_decoder_t *dec, uint8_t byte, fb_frame_t *frame);
int fb_parse_config(const fb_frame_t *f, fb_config_t *out);
int fb_parse_ping(const fb_frame_t *f, fb_ping_t *out);
int fb_parse_time_sync(const fb_frame_t *f, fb_time_sync_t *out);

/* Extend a wrapping 32-bit microsecond counter (Arduino micros()) to 64 bits; call at least every 71 min. */
uint64_t fb_extend_us(uint32_t now32, uint64_t *state);

#ifdef __cplusplus
}
#endif
#endif /* FB_PROTO_H */
