/* LD_PRELOAD=segv_trace.so: on SIGSEGV print the C/C++ stack (glibc backtrace) to stderr, then die as before.
   A probe for crashes inside native libraries where gdb is not installed: gcc -shared -fPIC -o x.so segv_trace.c */
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static void on_segv(int sig) {
    void *frames[64];
    int n = backtrace(frames, 64);
    static const char head[] = "\n--- native stack at SIGSEGV ---\n";
    write(2, head, sizeof head - 1);
    backtrace_symbols_fd(frames, n, 2);
    signal(sig, SIG_DFL);
    raise(sig);
}

__attribute__((constructor)) static void install(void) { signal(SIGSEGV, on_segv); }
