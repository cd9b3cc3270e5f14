/*
 * LD_PRELOAD shim for Debian's SyncEvolution 2.0.0 HTTP client.
 *
 * Its CurlTransportAgent passes capture-less C++ lambdas through the variadic
 * curl_easy_setopt() for CURLOPT_READFUNCTION/WRITEFUNCTION. An empty closure
 * occupies no register in the x86-64 ABI, so libcurl reads garbage, falls
 * back to fread/fwrite on the agent object and the client segfaults on its
 * first send (research/syncml.md §1.1). For calls coming from
 * libsyncevolution we install C callbacks that forward to the exported
 * members CurlTransportAgent::readData/writeData(void*, size_t) instead.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#define OPT_WRITEFUNCTION 20011
#define OPT_READFUNCTION 20012

typedef int (*setopt_t)(void *, int, ...);
typedef size_t (*member_t)(void *self, void *buf, size_t len);

static member_t se_read, se_write;

static size_t shim_read(char *b, size_t s, size_t n, void *self) { return se_read(self, b, s * n); }
static size_t shim_write(char *b, size_t s, size_t n, void *self) { return se_write(self, b, s * n); }

int curl_easy_setopt(void *handle, int option, ...)
{
    static setopt_t real;
    va_list ap;
    void *arg;
    if (!real)
        real = (setopt_t)dlsym(RTLD_NEXT, "curl_easy_setopt");
    /* x86-64: every curl option argument travels in one 8-byte slot. */
    va_start(ap, option);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (option == OPT_READFUNCTION || option == OPT_WRITEFUNCTION) {
        Dl_info info;
        if (dladdr(__builtin_return_address(0), &info) && info.dli_fname &&
            strstr(info.dli_fname, "libsyncevolution")) {
            if (!se_read)
                se_read = (member_t)dlsym(RTLD_DEFAULT, "_ZN7SyncEvo18CurlTransportAgent8readDataEPvm");
            if (!se_write)
                se_write = (member_t)dlsym(RTLD_DEFAULT, "_ZN7SyncEvo18CurlTransportAgent9writeDataEPvm");
            if (option == OPT_READFUNCTION && se_read)
                arg = (void *)shim_read;
            else if (option == OPT_WRITEFUNCTION && se_write)
                arg = (void *)shim_write;
        }
    }
    return real(handle, option, arg);
}
