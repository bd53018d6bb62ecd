/* A real external TFLite delegate that claims no nodes (so the CPU kernels run everything), for tests of the
 * delegate load path without an accelerator: it exports the two entry points of
 * tensorflow/lite/delegates/external/external_delegate_interface.h, reads its options (fail=1 makes creation
 * fail with a reported error, as a delegate without its device does), and returns a TfLiteDelegate whose
 * Prepare succeeds without replacing any node. The struct mirrors TfLiteDelegate of tensorflow/lite/core/c/common.h
 * (TF 2.13+: data_, Prepare, three buffer-handle callbacks, flags, opaque_delegate_builder). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
typedef struct TfLiteDelegate {
  void* data_;
  int (*Prepare)(void* context, struct TfLiteDelegate* delegate);
  int (*CopyFromBufferHandle)(void*, struct TfLiteDelegate*, int, void*);
  int (*CopyToBufferHandle)(void*, struct TfLiteDelegate*, int, void*);
  void (*FreeBufferHandle)(void*, struct TfLiteDelegate*, int*);
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;
static int prepare(void* context, TfLiteDelegate* d) { (void)context; (void)d; return 0; }
TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n, void (*report_error)(const char*)) {
  for (size_t i = 0; i < n; i++) {
    if (strcmp(keys[i], "fail") == 0 && strcmp(values[i], "1") == 0) {
      if (report_error) report_error("noop delegate: asked to fail (option fail=1)");
      return NULL;
    }
  }
  TfLiteDelegate* d = calloc(1, sizeof(TfLiteDelegate));
  d->Prepare = prepare;
  return d;
}
void tflite_plugin_destroy_delegate(TfLiteDelegate* d) { free(d); }
