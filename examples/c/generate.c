/* Generate a story with the FlashLM C API.
 *
 *   cargo build --release -p flashlm-capi
 *   cc examples/c/generate.c -Icrates/flashlm-capi/include target/release/libflashlm.a -lm -lpthread -ldl -o generate
 *   ./generate "Once upon a time" [model.flm]
 */
#include <stdio.h>
#include <stdlib.h>

#include "flashlm.h"

static int print_piece(const char *text, size_t len, void *user_data) {
    size_t *bytes = user_data;
    *bytes += len;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0; /* go on */
}

int main(int argc, char **argv) {
    const char *prompt = argc > 1 ? argv[1] : "Once upon a time";
    flashlm_model *model = argc > 2 ? flashlm_model_load(argv[2]) : flashlm_model_load_bundled();
    if (model == NULL) {
        fprintf(stderr, "error: %s\n", flashlm_last_error());
        return 1;
    }
    flashlm_params params = flashlm_default_params();
    params.max_tokens = 60;
    params.seed = 7;
    size_t bytes = 0;
    uint32_t tokens = 0;
    printf("%s", prompt);
    int rc = flashlm_generate(model, prompt, &params, print_piece, &bytes, &tokens);
    printf("\n");
    if (rc != FLASHLM_OK) {
        fprintf(stderr, "error %d: %s\n", rc, flashlm_last_error());
        flashlm_model_free(model);
        return 1;
    }
    fprintf(stderr, "generated %u tokens (%zu bytes) with libflashlm %s\n", tokens, bytes, flashlm_version());
    flashlm_model_free(model);
    return 0;
}
