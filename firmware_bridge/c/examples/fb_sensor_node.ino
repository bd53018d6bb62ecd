// fb_sensor_node.ino - Arduino wiring for fb_sensor_node.c (copy fb_proto.h, fb_proto.c and
// fb_sensor_node.c next to this sketch). Works on boards with >= 4 KB RAM at FB_BODY_CAP 1024; on an
// AVR Uno build with -DFB_BODY_CAP=256 and a smaller BLOCK. Open the port on the host by its
// /dev/serial/by-id/ path; the host side is firmware_bridge.SerialSource.
extern "C" {
#include "fb_proto.h"
void node_setup(void);
void node_loop(void);

static uint64_t micros_state;

void board_uart_write(const uint8_t *data, size_t len) { Serial.write(data, len); }
int board_uart_read(void) { return Serial.available() ? Serial.read() : -1; }
uint64_t board_micros64(void) { return fb_extend_us(micros(), &micros_state); }
uint32_t board_random32(void) { return ((uint32_t)random(0x10000) << 16) ^ (uint32_t)random(0x10000); }
void board_read_accel(int16_t xyz[3]) {
  // replace with your sensor driver (ADXL355, LIS3DH...): raw counts at 4096 LSB/g
  xyz[0] = (int16_t)(analogRead(A0) - 512);
  xyz[1] = (int16_t)(analogRead(A1) - 512);
  xyz[2] = (int16_t)(analogRead(A2) - 512);
}
}

void setup() {
  Serial.begin(921600);
  randomSeed(analogRead(A3) ^ micros());  // boot id must differ between boots
  node_setup();
}

void loop() { node_loop(); }
