# summary: graphics: the Mandelbrot set in integer arithmetic, drawn into a 320x240 framebuffer
#
# A linear framebuffer, the way hobby OSes get one on QEMU and Bochs: program the Bochs VBE
# "dispi" registers (index port 0x1ce, data port 0x1cf, 16 bits each) for 320x240 pixels of 32
# bits, switch them on, and draw by writing pixels to memory at 0xe0000000. Each `outw` is a VM
# exit; the 76,800 pixels are plain memory writes and cost none.
#
# The set: for each point c of the plane, iterate z = z² + c from z = 0 and count the steps until
# |z| > 2 (at most MAX_ITERATIONS). No floating point (the host's instruction emulator has none):
# numbers are fixed point with 12 fraction bits, so 1.0 is 4096 and a product needs one shift.
# The picture has 160x120 points, each drawn as 2x2 pixels.
#
# `mini-kvm run --display mandelbrot` shows it in the terminal; `mini-kvm run --screenshot
# mandelbrot.png mandelbrot` saves it (docs/display.md).

.include "hypercall.inc"

.equ DISPI_INDEX,     0x1ce
.equ DISPI_DATA,      0x1cf
.equ DISPI_XRES,      1
.equ DISPI_YRES,      2
.equ DISPI_BPP,       3
.equ DISPI_ENABLE,    4
.equ DISPI_ENABLED,   0x01
.equ DISPI_LFB,       0x40          # linear framebuffer (always, here)
.equ FRAMEBUFFER,     0xe0000000

.equ WIDTH,           320           # pixels
.equ HEIGHT,          240
.equ PITCH,           WIDTH * 4     # bytes per line
.equ POINTS_X,        WIDTH / 2     # each point is 2x2 pixels
.equ POINTS_Y,        HEIGHT / 2

.equ FRACTION_BITS,   12            # fixed point: 1.0 = 4096
.equ X_MIN,           -9216         # -2.25
.equ Y_MIN,           -4608         # -1.125
.equ STEP,            77            # 0.0188: 160 points span 3.0, 120 points 2.25
.equ ESCAPE,          4 << FRACTION_BITS    # |z|² > 4: z escapes
.equ MAX_ITERATIONS,  24

    .code32
    .text
    .globl _start
_start:
    # The mode: resolution, depth, then enable.
    mov $DISPI_XRES, %ax
    mov $WIDTH, %bx
    call dispi_write
    mov $DISPI_YRES, %ax
    mov $HEIGHT, %bx
    call dispi_write
    mov $DISPI_BPP, %ax
    mov $32, %bx
    call dispi_write
    mov $DISPI_ENABLE, %ax
    mov $(DISPI_ENABLED | DISPI_LFB), %bx
    call dispi_write

    mov $FRAMEBUFFER, %ebp          # EBP: the first pixel of the current row of points
    xor %esi, %esi                  # ESI: the point's row
row:
    mov %esi, %eax
    imul $STEP, %eax
    add $Y_MIN, %eax
    mov %eax, c_imaginary
    xor %edi, %edi                  # EDI: the point's column
column:
    mov %edi, %eax
    imul $STEP, %eax
    add $X_MIN, %eax
    mov %eax, c_real

    call escape_time                # ECX: the steps until z escaped
    xor %eax, %eax                  # black: inside the set
    cmp $MAX_ITERATIONS, %ecx
    je 1f
    and $15, %ecx
    mov palette(,%ecx,4), %eax
1:
    # 2x2 pixels of 4 bytes (blue, green, red, unused): this row and the next.
    lea (%ebp,%edi,8), %ebx
    mov %eax, (%ebx)
    mov %eax, 4(%ebx)
    mov %eax, PITCH(%ebx)
    mov %eax, PITCH+4(%ebx)

    inc %edi
    cmp $POINTS_X, %edi
    jb column
    add $(2 * PITCH), %ebp
    inc %esi
    cmp $POINTS_Y, %esi
    jb row

    say32 "mandelbrot: 160x120 points drawn at 320x240, 32 bits per pixel, at 0xe0000000\n"
    xor %ebx, %ebx
    hypercall HC_EXIT

# dispi_write: register AX := BX. Two 16-bit `out`s, two VM exits.
dispi_write:
    mov $DISPI_INDEX, %dx
    out %ax, (%dx)
    mov $DISPI_DATA, %dx
    mov %bx, %ax
    out %ax, (%dx)
    ret

# escape_time: iterate z = z² + c for c = (c_real, c_imaginary). Returns in ECX the steps taken
# before |z|² > 4, or MAX_ITERATIONS. Clobbers EAX, EBX, EDX.
escape_time:
    push %esi
    push %edi
    xor %ebx, %ebx                  # EBX: z's real part
    xor %edx, %edx                  # EDX: z's imaginary part
    xor %ecx, %ecx
iterate:
    mov %ebx, %eax                  # EAX: re² (fixed point: shift the product back)
    imul %eax, %eax
    sar $FRACTION_BITS, %eax
    mov %edx, %esi                  # ESI: im²
    imul %esi, %esi
    sar $FRACTION_BITS, %esi
    lea (%eax,%esi), %edi
    cmp $ESCAPE, %edi
    jg escaped
    imul %ebx, %edx                 # im = 2·re·im + c_imaginary
    sar $(FRACTION_BITS - 1), %edx
    add c_imaginary, %edx
    sub %esi, %eax                  # re = re² - im² + c_real
    add c_real, %eax
    mov %eax, %ebx
    inc %ecx
    cmp $MAX_ITERATIONS, %ecx
    jb iterate
escaped:
    pop %edi
    pop %esi
    ret

    .data
    .balign 4
c_real:       .long 0
c_imaginary:  .long 0
# 16 colours (0x00RRGGBB) for the steps taken, from deep blue through white to orange and back.
palette:
    .long 0x000764, 0x062a8c, 0x1052b4, 0x2079d4, 0x46a0e6, 0x86c8f2, 0xcfeefa, 0xffffff
    .long 0xfff0b4, 0xffd870, 0xffb43c, 0xf08c14, 0xc86400, 0x8c4000, 0x502000, 0x200c28
