/*
 * fb_vector_driver.c - drives fb_proto.c from the shared known-answer vectors (tests/integration/test_c_codec.py).
 *
 *   fb_vector_driver encode   stdin: one frame spec per line  -> stdout: wire bytes as hex, one line each
 *   fb_vector_driver decode   stdin: hex lines, one byte stream -> stdout: one line per decoder result
 *   fb_vector_driver cobs     stdin: hex lines                 -> stdout: COBS encoding as hex
 *
 * Frame specs (integers decimal, floats as C99 hex floats, text and uid as hex, "-" for empty):
 *   hello C F major minor patch boot_id t_us uid n_sensors {id kind format channels rate scale offset unit}*
 *   samples C F sensor format channels count t_us value*
 *   heartbeat C F t_us dropped | error C F code text | pong C F nonce t_us | raw C F type payload
 * Decode results: "ok TYPE COUNTER FLAGS PAYLOAD [parsed fields]" or "error KIND".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fb_proto.h"

#define LINE_CAP 16384

static uint8_t wire[FB_WIRE_CAP(FB_BODY_CAP)];
static fb_encoder_t enc;

static size_t unhex(const char *s, uint8_t *out, size_t cap) {
    size_t n = 0;
    if (strcmp(s, "-") == 0) return 0;
    while (s[0] && s[1] && n < cap) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1) break;
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static void puthex(const uint8_t *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) printf("%02x", p[i]);
}

static char *tok(void) { return strtok(NULL, " \t\r\n"); }
static unsigned long long num(void) {
    char *t = tok();
    return t ? strtoull(t, NULL, 0) : 0;
}
static float flt(void) {
    char *t = tok();
    return t ? (float)strtod(t, NULL) : 0.0f;
}

static int encode_line(char *line) {
    char *kind = strtok(line, " \t\r\n");
    uint8_t flags;
    size_t n = 0;
    if (!kind) return 0;
    enc.counter = (uint16_t)num();
    flags = (uint8_t)num();
    if (strcmp(kind, "hello") == 0) {
        static uint8_t uid[16];
        static fb_sensor_t sensors[8];
        static char units[8][32];
        fb_hello_t h;
        uint8_t i;
        h.fw_major = (uint8_t)num(); h.fw_minor = (uint8_t)num(); h.fw_patch = (uint8_t)num();
        h.boot_id = (uint32_t)num();
        h.t_us = num();
        h.uid_len = (uint8_t)unhex(tok(), uid, sizeof uid);
        h.uid = uid;
        h.n_sensors = (uint8_t)num();
        for (i = 0; i < h.n_sensors && i < 8; i++) {
            fb_sensor_t *s = &sensors[i];
            size_t ulen;
            s->id = (uint8_t)num(); s->kind = (uint8_t)num(); s->format = (uint8_t)num(); s->channels = (uint8_t)num();
            s->rate_hz = flt(); s->scale = flt(); s->offset = flt();
            ulen = unhex(tok(), (uint8_t *)units[i], sizeof units[i] - 1);
            units[i][ulen] = 0;
            s->unit = units[i];
        }
        h.sensors = sensors;
        n = fb_encode_hello(&enc, &h, flags, wire, sizeof wire);
    } else if (strcmp(kind, "samples") == 0) {
        static int16_t v16[2048];
        static int32_t v32[1024];
        static float vf[1024];
        uint8_t sensor = (uint8_t)num(), format = (uint8_t)num(), channels = (uint8_t)num();
        uint16_t count = (uint16_t)num();
        uint64_t t_us = num();
        size_t i, total = (size_t)count * channels;
        const void *values = v16;
        for (i = 0; i < total && i < 1024; i++) {
            char *t = tok();
            if (!t) break;
            if (format == FB_I16) v16[i] = (int16_t)strtol(t, NULL, 0);
            else if (format == FB_I32) v32[i] = (int32_t)strtoll(t, NULL, 0);
            else vf[i] = (float)strtod(t, NULL);
        }
        if (format == FB_I32) values = v32;
        if (format == FB_F32) values = vf;
        n = fb_encode_samples(&enc, sensor, format, channels, count, t_us, values, wire, sizeof wire);
    } else if (strcmp(kind, "heartbeat") == 0) {
        uint64_t t = num();
        n = fb_encode_heartbeat(&enc, t, (uint32_t)num(), wire, sizeof wire);
    } else if (strcmp(kind, "error") == 0) {
        static char text[256];
        uint16_t code = (uint16_t)num();
        size_t len = unhex(tok(), (uint8_t *)text, sizeof text - 1);
        text[len] = 0;
        n = fb_encode_error(&enc, code, text, wire, sizeof wire);
    } else if (strcmp(kind, "pong") == 0) {
        uint32_t nonce = (uint32_t)num();
        n = fb_encode_pong(&enc, nonce, num(), wire, sizeof wire);
    } else if (strcmp(kind, "raw") == 0) {
        static uint8_t payload[FB_BODY_CAP];
        uint8_t type = (uint8_t)num();
        size_t len = unhex(tok(), payload, sizeof payload);
        n = fb_encode_frame(&enc, type, flags, payload, len, wire, sizeof wire);
    } else {
        fprintf(stderr, "unknown frame kind %s\n", kind);
        return 1;
    }
    if (n == 0) {
        printf("encode-error\n");
        return 0;
    }
    puthex(wire, n);
    printf("\n");
    return 0;
}

static const char *kinds[] = {"", "cobs", "length", "crc", "version", "unknown_type", "payload"};

static void decode_byte(fb_decoder_t *dec, uint8_t b) {
    fb_frame_t f;
    int r = fb_decoder_push(dec, b, &f);
    if (r == FB_NEED_MORE) return;
    if (r < 0) {
        printf("error %s\n", kinds[-r]);
        return;
    }
    if (f.type == FB_CONFIG) {
        fb_config_t c;
        uint32_t bits;
        if (fb_parse_config(&f, &c) != FB_OK) { printf("error payload\n"); return; }
        memcpy(&bits, &c.rate_hz, 4);
        printf("ok %u %u %u ", f.type, f.counter, f.flags);
        puthex(f.payload, f.payload_len);
        printf(" config %u %08lx\n", c.sensor_id, (unsigned long)bits);
    } else if (f.type == FB_PING) {
        fb_ping_t p;
        if (fb_parse_ping(&f, &p) != FB_OK) { printf("error payload\n"); return; }
        printf("ok %u %u %u ", f.type, f.counter, f.flags);
        puthex(f.payload, f.payload_len);
        printf(" ping %lu\n", (unsigned long)p.nonce);
    } else if (f.type == FB_TIME_SYNC) {
        fb_time_sync_t t;
        if (fb_parse_time_sync(&f, &t) != FB_OK) { printf("error payload\n"); return; }
        printf("ok %u %u %u ", f.type, f.counter, f.flags);
        puthex(f.payload, f.payload_len);
        printf(" time_sync %lu %llu\n", (unsigned long)t.nonce, (unsigned long long)t.host_time_us);
    } else {
        printf("ok %u %u %u ", f.type, f.counter, f.flags);
        puthex(f.payload, f.payload_len);
        printf("\n");
    }
}

int main(int argc, char **argv) {
    static char line[LINE_CAP];
    static uint8_t bytes[LINE_CAP / 2];
    static uint8_t out[LINE_CAP];
    static fb_decoder_t dec;
    const char *mode = argc > 1 ? argv[1] : "";
    fb_encoder_init(&enc);
    fb_decoder_init(&dec);
    if (strcmp(mode, "encode") && strcmp(mode, "decode") && strcmp(mode, "cobs")) {
        fprintf(stderr, "usage: %s encode|decode|cobs < input\n", argv[0]);
        return 2;
    }
    while (fgets(line, sizeof line, stdin)) {
        char *nl = strpbrk(line, "\r\n");
        size_t n, i;
        if (nl) *nl = 0;
        if (strcmp(mode, "encode") == 0) {
            if (encode_line(line)) return 1;
            continue;
        }
        n = unhex(line, bytes, sizeof bytes);
        if (strcmp(mode, "cobs") == 0) {
            size_t m = fb_cobs_encode(bytes, n, out, sizeof out);
            long back;
            puthex(out, m);
            printf("\n");
            back = fb_cobs_decode(out, m);
            if (back != (long)n || memcmp(out, bytes, n) != 0) fprintf(stderr, "cobs round trip failed\n");
            continue;
        }
        for (i = 0; i < n; i++) decode_byte(&dec, bytes[i]);
        printf("end\n");
    }
    return 0;
}
