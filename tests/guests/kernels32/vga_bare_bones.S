# summary: test kernel: multiboot v1, written like the classic first kernels: it writes its
# greeting into the VGA text buffer at 0xb8000, then `cli; hlt`
#
# The OSDev wiki's "Bare Bones" kernel, in assembly: a multiboot header, a stack, a terminal
# cleared to light grey on black (attribute 0x07), a line of text from the top-left corner, and
# the end every first kernel has. It never touches the cursor or a port: everything it shows is
# in memory, which `mini-kvm run --screen-dump FILE` reads (tests/display.rs).
#
# Expected stdout: empty; status 0 (a `hlt` with interrupts off ends a guest); the screen: its
# greeting on row 0, every cell light grey on black.

    .equ MULTIBOOT_MAGIC, 0x1badb002
    .equ MULTIBOOT_FLAGS, 0
    .equ VGA_TEXT, 0xb8000
    .equ CELLS, 80 * 25
    .equ LIGHT_GREY_ON_BLACK, 0x07

    .section .multiboot, "a"
    .balign 4
    .long MULTIBOOT_MAGIC
    .long MULTIBOOT_FLAGS
    .long -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)

    .code32
    .text
    .globl _start
_start:
    mov $stack_top, %esp

    # terminal_initialize: every cell a blank, light grey on black.
    mov $VGA_TEXT, %edi
    mov $((LIGHT_GREY_ON_BLACK << 8) | ' '), %ax
    mov $CELLS, %ecx
    rep stosw

    # terminal_writestring: the greeting from row 0, column 0.
    mov $greeting, %esi
    mov $VGA_TEXT, %edi
    mov $LIGHT_GREY_ON_BLACK, %ah
1:  lodsb
    test %al, %al
    jz 2f
    stosw
    jmp 1b

2:  cli
3:  hlt                             # nothing can wake us: no interrupt is allowed
    jmp 3b

    .section .rodata
greeting:
    .asciz "Hello, kernel World!"

    .bss
    .balign 16
    .skip 4096
stack_top:
