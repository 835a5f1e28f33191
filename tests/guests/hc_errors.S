# summary: test: every hypercall's success and error results, printed one per line
#
# Input: none (stdin empty, e.g. /dev/null). RAM: the default 1 MiB.
# Expected stdout, exactly (each line ends with "\n"):
#     unknown=65535
#     write_crosses_ram_end=65534
#     write_outside_ram=65534
#     write_len0=0
#     write(hi)=2
#     read_cap0=65533
#     read_crosses_ram_end=65534
#     exit300=65533
#     putchar(!)=0
#     putnum(12345)=0
#     newline(
#     )=0
#     getchar_eof=65535
#     read_eof=0
#     clock=ok
# Expected exit status: 7.
#
# In 16-bit mode results are 16 bits: -1 = 65535 (unknown call, or end of input for GETCHAR),
# -2 = 65534 (EFAULT: range outside guest RAM), -3 = 65533 (invalid argument). A failed call never
# stops the guest, not even a refused EXIT. The failed WRITEs must print nothing. The two READs
# that fail must fail on their arguments alone (checked before waiting for input).

.include "hypercall.inc"

# result "label=": print the label, then the result of the previous call (AX) and a newline.
.macro result text
    push %ax                    # the WRITE of the label overwrites AX
    say16 "\text"
    pop %bx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE
.endm

    .code16
    .text
    .globl _start
_start:
    # Unknown call number: -1.
    hypercall 0x42
    result "unknown="

    # WRITE from 0xF000:0xFF00 (linear 0xFFF00), 0x200 bytes: ends at 0x100100, beyond 1 MiB.
    # The start is in RAM, but the whole range is checked: -2, and nothing is printed.
    mov $0xF000, %ax
    mov %ax, %ds
    mov $0xFF00, %bx
    mov $0x200, %cx
    hypercall HC_WRITE
    push %cs                    # restore DS = CS = 0x1000
    pop %ds
    result "write_crosses_ram_end="

    # WRITE from 0xFFFF:0x0100 (linear 0x1000F0): entirely outside RAM: -2.
    mov $0xFFFF, %ax
    mov %ax, %ds
    mov $0x0100, %bx
    mov $4, %cx
    hypercall HC_WRITE
    push %cs
    pop %ds
    result "write_outside_ram="

    # WRITE of length 0: nothing to do, 0 bytes written.
    mov $buffer, %bx
    xor %cx, %cx
    hypercall HC_WRITE
    result "write_len0="

    # A successful WRITE returns the byte count.
    say16 "write("
    say16 "hi"
    result ")="

    # READ with capacity 0: invalid argument, -3.
    mov $buffer, %bx
    xor %cx, %cx
    hypercall HC_READ
    result "read_cap0="

    # READ into 0xF000:0xFF00, capacity 0x200: the buffer crosses the end of RAM: -2.
    mov $0xF000, %ax
    mov %ax, %ds
    mov $0xFF00, %bx
    mov $0x200, %cx
    hypercall HC_READ
    push %cs
    pop %ds
    result "read_crosses_ram_end="

    # EXIT with a status above 255: invalid argument, -3, and the guest goes on.
    mov $300, %bx
    hypercall HC_EXIT
    result "exit300="

    # PUTCHAR, PUTNUM and NEWLINE return 0; their own output sits between the parentheses.
    say16 "putchar("
    mov $'!', %bx
    hypercall HC_PUTCHAR
    result ")="

    say16 "putnum("
    mov $12345, %bx
    hypercall HC_PUTNUM
    result ")="

    say16 "newline("
    hypercall HC_NEWLINE
    result ")="

    # End of input (stdin is empty): GETCHAR returns -1, READ returns 0.
    hypercall HC_GETCHAR
    result "getchar_eof="

    mov $buffer, %bx
    mov $buffer_len, %cx
    hypercall HC_READ
    result "read_eof="

    # CLOCK: in 16-bit mode only the low 16 bits of the nanosecond count come back, so the value
    # itself is not printed; two calls that both return 0 would mean the clock does not work.
    hypercall HC_CLOCK
    mov %ax, %di
    hypercall HC_CLOCK
    or %di, %ax                 # zero only if both results were zero
    jz clock_bad
    say16 "clock=ok\n"
    jmp finish
clock_bad:
    say16 "clock=bad\n"

finish:
    # A non-zero status must travel to the exit status of the mini-kvm process.
    mov $7, %bx
    hypercall HC_EXIT

    .bss
buffer:
    .skip 16
    .equ buffer_len, . - buffer
