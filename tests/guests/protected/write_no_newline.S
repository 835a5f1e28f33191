# summary: test: WRITE 65535 letters without a newline, again and again (run with --mode protected)
#
# Input: none.
# Expected: "AAAA..." on stdout forever, never a newline; the guest never stops by itself. Two of
# these at once made mini-kvm's partial-line buffers grow and shrink on the vCPU threads, and
# glibc's malloc then opened /proc/sys/vm/overcommit_memory from a thread under seccomp (status
# 159 for every guest). --timeout must end the run instead.

.include "hypercall.inc"

    .code32
    .text
    .globl _start
_start:
    mov $0x20000, %edi                   # 64 KiB of 'A' at 128 KiB
    mov $0xffff, %ecx
    mov $'A', %al
    cld
    rep stosb
again:
    mov $0x20000, %ebx
    mov $0xffff, %ecx
    hypercall HC_WRITE
    jmp again
