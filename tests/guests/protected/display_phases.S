# summary: test: the display in three phases, each ended by a GETCHAR
#
# Run with --mode protected. A test looks at the screen between the phases (tests/display.rs),
# through the dirty log a view uses:
#   1. "phase 1" in the text buffer, white on blue, at row 0;
#   2. the Bochs VBE adapter switched to 64x64 pixels of 32 bits, all red (64 x 64 x 4 bytes:
#      16 KiB, 4 pages of the framebuffer);
#   3. one blue pixel at (0, 32): a write to framebuffer page 2 alone.
# Then EXIT 0.

.include "hypercall.inc"

    .equ FRAMEBUFFER, 0xe0000000

    .code32
    .text
    .globl _start
_start:
    mov $0xb8000, %edi
    mov $phase1, %esi
    mov $0x1f, %ah                          # white on blue
1:  lodsb
    test %al, %al
    jz 2f
    stosw
    jmp 1b
2:  hypercall HC_GETCHAR

    mov $1, %ax                             # X resolution
    mov $64, %bx
    call dispi_write
    mov $2, %ax                             # Y resolution
    call dispi_write
    mov $3, %ax                             # bits per pixel
    mov $32, %bx
    call dispi_write
    mov $4, %ax                             # enable, linear framebuffer
    mov $0x41, %bx
    call dispi_write
    mov $FRAMEBUFFER, %edi
    mov $0xff0000, %eax                     # red
    mov $(64 * 64), %ecx
    rep stosl
    hypercall HC_GETCHAR

    movl $0x0000ff, FRAMEBUFFER + 32 * 256  # blue, row 32, column 0
    hypercall HC_GETCHAR
    xor %ebx, %ebx
    hypercall HC_EXIT

# dispi_write: Bochs VBE register AX := BX.
dispi_write:
    mov $0x1ce, %dx
    out %ax, (%dx)
    mov $0x1cf, %dx
    mov %bx, %ax
    out %ax, (%dx)
    ret

phase1:
    .asciz "phase 1"
