/* Handle misuse the C API must report, never crash on or read through (run natively and under
 * valgrind by tests/capi.rs): a foreign pointer, a free from inside a generate callback, a
 * double free, and a use after free. Prints "misuse: ok" and exits 0 when every call gives the
 * documented status code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flashlm.h"

static int failures = 0;

static void expect(const char *what, int got, int want) {
    if (got != want) {
        fprintf(stderr, "%s: got %d, want %d (%s)\n", what, got, want, flashlm_last_error());
        failures++;
    }
}

/* Tries to free the model it is generating with, then stops. */
static int free_inside(const char *text, size_t len, void *user) {
    (void)text;
    (void)len;
    flashlm_model **m = user;
    expect("free inside the callback", flashlm_model_free(*m), FLASHLM_ERR_BUSY);
    if (strstr(flashlm_last_error(), "in use") == NULL) {
        fprintf(stderr, "free inside the callback: message %s\n", flashlm_last_error());
        failures++;
    }
    return 1;
}

int main(void) {
    flashlm_model *m = flashlm_model_load_bundled();
    if (!m) {
        fprintf(stderr, "load: %s\n", flashlm_last_error());
        return 1;
    }
    flashlm_params p = flashlm_default_params();
    p.max_tokens = 20;

    /* A pointer to something else: 64 bytes of another object. */
    char *foreign = calloc(1, 64);
    expect("generate with a foreign pointer",
           flashlm_generate((flashlm_model *)foreign, "Hi", &p, NULL, NULL, NULL), FLASHLM_ERR_ARGUMENT);
    expect("free of a foreign pointer", flashlm_model_free((flashlm_model *)foreign), FLASHLM_ERR_ARGUMENT);
    free(foreign);

    /* Free from inside the callback: refused, the model stays usable. */
    expect("generate whose callback frees", flashlm_generate(m, "Once upon a time", &p, free_inside, &m, NULL),
           FLASHLM_STOPPED);
    unsigned tokens = 0;
    expect("generate after the refused free", flashlm_generate(m, "Once upon a time", &p, NULL, NULL, &tokens),
           FLASHLM_OK);
    if (tokens == 0) {
        fprintf(stderr, "no tokens after the refused free\n");
        failures++;
    }

    /* Free, then double free and use after free. */
    expect("free", flashlm_model_free(m), FLASHLM_OK);
    expect("double free", flashlm_model_free(m), FLASHLM_ERR_ARGUMENT);
    expect("use after free", flashlm_generate(m, "Hi", &p, NULL, NULL, NULL), FLASHLM_ERR_ARGUMENT);
    double bpc = 0;
    expect("eval after free", flashlm_eval_bpc(m, "x.txt", FLASHLM_PROTOCOL_EXACT, 1, &bpc), FLASHLM_ERR_ARGUMENT);
    expect("free of NULL", flashlm_model_free(NULL), FLASHLM_OK);

    if (failures) return 1;
    printf("misuse: ok\n");
    return 0;
}
