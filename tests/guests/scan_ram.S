# summary: test: scans all of its RAM for the marker that mark_ram writes into its own RAM
#
# Input: one byte (the test sends it once mark_ram has printed "marked"): the guest waits for it
# with GETCHAR, so the scan happens while the other VM's RAM is full of markers.
# The guest first writes ONE marker into its own RAM (at 0x80000), so a working scan finds exactly
# one. Expected stdout: "markers seen: 1\n", status 0. Shared memory would show "1000" (the count
# stops there).
#
# The marker 0x5A3C is built at run time so that this program's own bytes never contain it.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    hypercall HC_GETCHAR        # wait for the go signal

    mov $0x5A00, %ax
    or $0x3C, %al               # AX = 0x5A3C, the marker
    mov $0x8000, %bx
    mov %bx, %es
    movw %ax, %es:0             # our own marker, at linear 0x80000

    xor %dx, %dx                # markers seen
    xor %bx, %bx                # segment 0x0000 ... 0xF000
scan_segment:
    mov %bx, %es
    xor %di, %di
    mov $0x8000, %cx            # words in a segment
    cld
scan_more:
    repne scasw                 # compare AX with ES:DI, DI += 2, until equal or CX = 0
    jne segment_done            # ran out without a match
    inc %dx
    cmp $1000, %dx
    jae report                  # plenty: stop counting
    test %cx, %cx
    jnz scan_more
segment_done:
    add $0x1000, %bx
    jnz scan_segment

report:
    push %dx
    mov $label, %bx
    mov $(label_end - label), %cx
    hypercall HC_WRITE
    pop %bx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE
    xor %bx, %bx
    hypercall HC_EXIT

label:
    .ascii "markers seen: "
label_end:
