/*
 * fb_proto.c - firmware_bridge serial protocol, microcontroller side. See fb_proto.h.
 * C99, no malloc, no stdio. Multi-byte fields are written byte by byte (little-endian) so the code is
 * independent of the MCU's endianness and alignment. Floats are IEEE 754 binary32.
 */
#include "fb_proto.h"

#include <string.h>

/* CRC-32/ISO-HDLC: reflected polynomial 0xEDB88320, init and xorout 0xFFFFFFFF (zlib.crc32).
 * Define FB_CRC_SMALL to use a 16-entry nibble table (64 bytes) instead of 1 KB. */
#ifdef FB_CRC_SMALL
static const uint32_t fb_crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};

uint32_t fb_crc32(uint32_t crc, const uint8_t *data, size_t len) {
    crc = ~crc;
    while (len--) {
        crc ^= *data++;
        crc = (crc >> 4) ^ fb_crc_nibble[crc & 0x0Fu];
        crc = (crc >> 4) ^ fb_crc_nibble[crc & 0x0Fu];
    }
    return ~crc;
}
#else
static uint32_t fb_crc_table[256];
static int fb_crc_ready = 0;

static void fb_crc_init(void) {
    uint32_t i, j, c;
    for (i = 0; i < 256u; i++) {
        c = i;
        for (j = 0; j < 8u; j++) c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        fb_crc_table[i] = c;
    }
    fb_crc_ready = 1;
}

uint32_t fb_crc32(uint32_t crc, const uint8_t *data, size_t len) {
    if (!fb_crc_ready) fb_crc_init();
    crc = ~crc;
    while (len--) crc = (crc >> 8) ^ fb_crc_table[(crc ^ *data++) & 0xFFu];
    return ~crc;
}
#endif

size_t fb_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap) {
    size_t o = 1, code_at = 0, i;
    uint8_t code = 1;
    if (out_cap < len + len / 254u + 1u) return 0;
    for (i = 0; i < len; i++) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            code++;
            if (code == 0xFF) {
                out[code_at] = code;
                code = 1;
                if (i + 1 == len) return o; /* canonical: no empty block after a final full one */
                code_at = o++;
            }
        }
    }
    out[code_at] = code;
    return o;
}

long fb_cobs_decode(uint8_t *buf, size_t len) {
    size_t r = 0, w = 0;
    if (len == 0) return -1;
    while (r < len) {
        uint8_t code = buf[r];
        size_t end, k;
        if (code == 0) return -1;
        end = r + code;
        if (end > len) return -1;
        for (k = r + 1; k < end; k++) {
            if (buf[k] == 0) return -1;
            buf[w++] = buf[k];
        }
        r = end;
        if (code != 0xFF && r < len) buf[w++] = 0;
    }
    return (long)w;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static void putf(uint8_t *p, float f) { uint32_t v; memcpy(&v, &f, 4); put32(p, v); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }
static float getf(const uint8_t *p) { uint32_t v = get32(p); float f; memcpy(&f, &v, 4); return f; }

void fb_encoder_init(fb_encoder_t *enc) { enc->counter = 0; }

/* The payload is already in enc->body + FB_HEADER_SIZE: add header and CRC, COBS into out. */
static size_t fb_finish(fb_encoder_t *enc, uint8_t type, uint8_t flags, size_t len, uint8_t *out, size_t cap) {
    uint8_t *b = enc->body;
    size_t body_len = FB_HEADER_SIZE + len + FB_CRC_SIZE, n;
    if (body_len > FB_BODY_CAP) return 0;
    b[0] = FB_PROTOCOL_VERSION; b[1] = type; b[2] = flags;
    put16(b + 3, enc->counter);
    put32(b + FB_HEADER_SIZE + len, fb_crc32(0, b, FB_HEADER_SIZE + len));
    if (cap < 1) return 0;
    n = fb_cobs_encode(b, body_len, out, cap - 1);
    if (n == 0) return 0;
    out[n++] = 0;
    enc->counter++;
    return n;
}

size_t fb_encode_frame(fb_encoder_t *enc, uint8_t type, uint8_t flags, const uint8_t *payload, size_t len,
                       uint8_t *out, size_t out_cap) {
    if (FB_HEADER_SIZE + len + FB_CRC_SIZE > FB_BODY_CAP) return 0;
    if (len) memmove(enc->body + FB_HEADER_SIZE, payload, len);
    return fb_finish(enc, type, flags, len, out, out_cap);
}

size_t fb_encode_hello(fb_encoder_t *enc, const fb_hello_t *h, uint8_t flags, uint8_t *out, size_t out_cap) {
    uint8_t *p = enc->body + FB_HEADER_SIZE;
    const size_t room = FB_BODY_CAP - FB_HEADER_SIZE - FB_CRC_SIZE;
    size_t n = 0, i;
    if (h->uid_len > 16u || h->n_sensors > 8u || 17u + h->uid_len > room) return 0;
    p[0] = h->fw_major; p[1] = h->fw_minor; p[2] = h->fw_patch;
    put32(p + 3, h->boot_id);
    put64(p + 7, h->t_us);
    p[15] = h->uid_len;
    if (h->uid_len) memcpy(p + 16, h->uid, h->uid_len);
    n = 16u + h->uid_len;
    p[n++] = h->n_sensors;
    for (i = 0; i < h->n_sensors; i++) {
        const fb_sensor_t *s = &h->sensors[i];
        size_t ulen = s->unit ? strlen(s->unit) : 0;
        if (ulen > 15u || n + 18u + ulen > room) return 0;
        p[n] = (uint8_t)(17u + ulen); /* descriptor length */
        p[n + 1] = s->id; p[n + 2] = s->kind; p[n + 3] = s->format; p[n + 4] = s->channels;
        putf(p + n + 5, s->rate_hz);
        putf(p + n + 9, s->scale);
        putf(p + n + 13, s->offset);
        p[n + 17] = (uint8_t)ulen;
        if (ulen) memcpy(p + n + 18, s->unit, ulen);
        n += 18u + ulen;
    }
    return fb_finish(enc, FB_HELLO, flags, n, out, out_cap);
}

size_t fb_encode_samples(fb_encoder_t *enc, uint8_t sensor_id, uint8_t format, uint8_t channels, uint16_t count,
                         uint64_t t_us, const void *values, uint8_t *out, size_t out_cap) {
    uint8_t *p = enc->body + FB_HEADER_SIZE;
    size_t size = (format == FB_I16) ? 2u : (format == FB_I32 || format == FB_F32) ? 4u : 0u;
    size_t n_values = (size_t)count * channels, i, len;
    if (size == 0 || channels == 0 || channels > 16u || count == 0) return 0;
    len = 13u + n_values * size;
    if (FB_HEADER_SIZE + len + FB_CRC_SIZE > FB_BODY_CAP) return 0;
    p[0] = sensor_id; p[1] = format; p[2] = channels;
    put16(p + 3, count);
    put64(p + 5, t_us);
    for (i = 0; i < n_values; i++) {
        uint8_t *q = p + 13 + i * size;
        if (format == FB_I16) put16(q, (uint16_t)((const int16_t *)values)[i]);
        else if (format == FB_I32) put32(q, (uint32_t)((const int32_t *)values)[i]);
        else putf(q, ((const float *)values)[i]);
    }
    return fb_finish(enc, FB_SAMPLES, 0, len, out, out_cap);
}

size_t fb_encode_heartbeat(fb_encoder_t *enc, uint64_t t_us, uint32_t dropped, uint8_t *out, size_t out_cap) {
    uint8_t *p = enc->body + FB_HEADER_SIZE;
    put64(p, t_us);
    put32(p + 8, dropped);
    return fb_finish(enc, FB_HEARTBEAT, 0, 12u, out, out_cap);
}

size_t fb_encode_error(fb_encoder_t *enc, uint16_t code, const char *text, uint8_t *out, size_t out_cap) {
    uint8_t *p = enc->body + FB_HEADER_SIZE;
    size_t len = text ? strlen(text) : 0;
    if (len > 200u) { /* protocol limit: cut at a character boundary, the host refuses invalid UTF-8 */
        len = 200u;
        while (len > 0u && ((unsigned char)text[len] & 0xC0u) == 0x80u) len--; /* text[len]: first byte cut off */
    }
    if (FB_HEADER_SIZE + 3u + len + FB_CRC_SIZE > FB_BODY_CAP) return 0;
    put16(p, code);
    p[2] = (uint8_t)len;
    if (len) memcpy(p + 3, text, len);
    return fb_finish(enc, FB_ERROR, 0, 3u + len, out, out_cap);
}

size_t fb_encode_pong(fb_encoder_t *enc, uint32_t nonce, uint64_t t_us, uint8_t *out, size_t out_cap) {
    uint8_t *p = enc->body + FB_HEADER_SIZE;
    put32(p, nonce);
    put64(p + 4, t_us);
    return fb_finish(enc, FB_PONG, 0, 12u, out, out_cap);
}

void fb_decoder_init(fb_decoder_t *dec) { memset(dec, 0, sizeof *dec); }

static int fb_fail(fb_decoder_t *dec, int err) {
    dec->errors[-err]++;
    return err;
}

int fb_decoder_push(fb_decoder_t *dec, uint8_t byte, fb_frame_t *frame) {
    long n;
    uint8_t type;
    if (byte != 0) {
        if (dec->len < sizeof dec->buf) dec->buf[dec->len++] = byte;
        else if (!dec->overflow) { dec->overflow = 1; return fb_fail(dec, FB_ERR_LENGTH); }
        return FB_NEED_MORE;
    }
    if (dec->overflow) { dec->overflow = 0; dec->len = 0; return FB_NEED_MORE; } /* counted already */
    if (dec->len == 0) return FB_NEED_MORE;                                       /* idle delimiter */
    n = fb_cobs_decode(dec->buf, dec->len);
    dec->len = 0;
    if (n < 0) return fb_fail(dec, FB_ERR_COBS);
    if ((size_t)n < FB_HEADER_SIZE + FB_CRC_SIZE || (size_t)n > FB_MAX_BODY) return fb_fail(dec, FB_ERR_LENGTH);
    if (fb_crc32(0, dec->buf, (size_t)n - FB_CRC_SIZE) != get32(dec->buf + n - FB_CRC_SIZE))
        return fb_fail(dec, FB_ERR_CRC);
    if (dec->buf[0] != FB_PROTOCOL_VERSION) return fb_fail(dec, FB_ERR_VERSION);
    type = dec->buf[1];
    if (!((type >= FB_HELLO && type <= FB_PONG) || (type >= FB_CONFIG && type <= FB_HELLO_REQUEST)))
        return fb_fail(dec, FB_ERR_TYPE);
    frame->version = dec->buf[0];
    frame->type = type;
    frame->flags = dec->buf[2];
    frame->counter = get16(dec->buf + 3);
    frame->payload = dec->buf + FB_HEADER_SIZE;
    frame->payload_len = (size_t)n - FB_HEADER_SIZE - FB_CRC_SIZE;
    return FB_OK;
}

int fb_parse_config(const fb_frame_t *f, fb_config_t *out) {
    float r;
    if (f->type != FB_CONFIG || f->payload_len < 5u) return FB_ERR_PAYLOAD;
    r = getf(f->payload + 1);
    if (!(r > 0.0f && r < 3.4e38f)) return FB_ERR_PAYLOAD; /* rejects NaN, infinities and r <= 0 */
    out->sensor_id = f->payload[0];
    out->rate_hz = r;
    return FB_OK;
}

int fb_parse_ping(const fb_frame_t *f, fb_ping_t *out) {
    if (f->type != FB_PING || f->payload_len < 4u) return FB_ERR_PAYLOAD;
    out->nonce = get32(f->payload);
    return FB_OK;
}

int fb_parse_time_sync(const fb_frame_t *f, fb_time_sync_t *out) {
    if (f->type != FB_TIME_SYNC || f->payload_len < 12u) return FB_ERR_PAYLOAD;
    out->nonce = get32(f->payload);
    out->host_time_us = get64(f->payload + 4);
    return FB_OK;
}

uint64_t fb_extend_us(uint32_t now32, uint64_t *state) {
    uint32_t last = (uint32_t)*state;
    uint64_t high = *state & 0xFFFFFFFF00000000ull;
    if (now32 < last) high += 0x100000000ull;
    *state = high | now32;
    return *state;
}
