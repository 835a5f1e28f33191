# summary: test: writes a marker word over all of its RAM, says so, then spins until stopped
#
# The isolation test runs this guest beside scan_ram. Expected stdout: "marked\n"; then the guest
# loops until --timeout stops it (status 124). It fills every 64 KiB segment of the first MiB
# except its own (0x1000: code and stack) with the word 0x5A3C.

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    mov $0x5A3C, %ax            # the marker
    xor %bx, %bx                # segment 0x0000, 0x1000, ... 0xF000
fill_segment:
    cmp $0x1000, %bx            # leave our own segment alone
    je next_segment
    mov %bx, %es
    xor %di, %di
    mov $0x8000, %cx            # 32 Ki words = the whole 64 KiB segment
    cld
    rep stosw
next_segment:
    add $0x1000, %bx
    jnz fill_segment            # after 0xF000 the add wraps to 0

    mov $message, %bx
    mov $(message_end - message), %cx
    hypercall HC_WRITE
spin:
    jmp spin                    # keep this VM (and its RAM) alive while the other guest looks

message:
    .ascii "marked\n"
message_end:
