# summary: VGA text mode: coloured text in the 80x25 buffer at 0xb8000, the cursor through 0x3d4
#
# What most first OS tutorials do, from real mode: write characters and their colours straight
# into the text buffer (segment 0xb800: each cell is a character byte, then an attribute byte,
# background colour in bits 4-6 and foreground in bits 0-3), then put the cursor where the next
# character would go through the CRT controller (index port 0x3d4, data port 0x3d5, registers
# 0x0e and 0x0f: the cell number, high byte then low byte). The memory writes cost no VM exit;
# only the four `out`s to the CRT controller and the hypercalls do.
#
# `mini-kvm run --screen-dump screen.txt vga_text` writes the screen to screen.txt
# (docs/display.md).

.include "hypercall.inc"

    .code16
    .text
    .globl _start
_start:
    mov $0xb800, %ax
    mov %ax, %es                # ES:DI -> the text buffer

    # Clear the screen: 2000 blank cells, light grey on black (attribute 0x07).
    xor %di, %di
    mov $0x0720, %ax
    mov $2000, %cx
    rep stosw

    # Row 0: a title, yellow on blue.
    mov $title, %si
    xor %di, %di
    mov $0x1e, %ah
    call print

    # Row 2: the 16 foreground colours on black, one letter each (A = black ... P = white).
    mov $(2 * 160), %di
    mov $'A', %al
    xor %ah, %ah                # attribute 0x00, 0x01, ... 0x0f
1:
    stosw
    inc %al
    inc %ah
    cmp $0x10, %ah
    jne 1b

    # Row 3: the 8 background colours, white letters (attributes 0x0f, 0x1f, ... 0x7f).
    mov $(3 * 160), %di
    mov $'a', %al
    mov $0x0f, %ah
2:
    stosw
    inc %al
    add $0x10, %ah
    cmp $0x8f, %ah
    jne 2b

    # Row 4: a line of text, light green on black.
    mov $line, %si
    mov $(4 * 160), %di
    mov $0x0a, %ah
    call print

    # The cursor at row 5, column 0: cell 5 * 80 = 400 = 0x0190.
    mov $0x3d4, %dx
    mov $0x0e, %al
    out %al, (%dx)              # index: cursor location, high byte
    inc %dx
    mov $0x01, %al
    out %al, (%dx)
    dec %dx
    mov $0x0f, %al
    out %al, (%dx)              # index: cursor location, low byte
    inc %dx
    mov $0x90, %al
    out %al, (%dx)

    say16 "vga_text: the screen is in the text buffer at 0xb8000\n"
    xor %bx, %bx                # status 0
    hypercall HC_EXIT

# Writes the zero-terminated string at DS:SI to ES:DI, each character with attribute AH.
print:
    lodsb
    test %al, %al
    jz 1f
    stosw
    jmp print
1:
    ret

title:
    .asciz "mini-kvm: VGA text mode"
line:
    .asciz "Written straight into guest memory: no VM exit per character."
