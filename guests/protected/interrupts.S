# summary: a tiny protected-mode kernel: IDT, PIC, PIT timer ticks, i8042 keyboard on IRQ 1, ring 3 and system calls
#
# Input: a line of keys, ended by Enter (typed at a terminal, or piped: "hi\n").
# Output, for the input "hi\n":
#   interrupts: a small protected-mode kernel
#   GDT: kernel and user segments and a TSS
#   IDT: exceptions, IRQs 0-15 at vectors 32-47
#   PIC: remapped to vectors 32-47; timer and keyboard unmasked
#   PIT: channel 0 at 100 Hz; interrupts on
#   timer: 10 ticks
#   keyboard: type a line, Enter ends it
#   hi
#   scancodes: 23 a3 17 97 1c
#   ring 3: sysexit to user mode
#   user: hello from ring 3, through sysenter
#   kernel: the user program exited with status 0
# then EXIT 0. (Any CPU exception: "kernel: unexpected CPU exception", EXIT 99.)
#
# Everything a PC kernel does to get interrupts, in order, each step printing one line:
#  1. its own GDT with ring-0 and ring-3 segments and a TSS (the CPU takes the ring-0 stack from
#     the TSS when an interrupt or system call arrives from ring 3);
#  2. an IDT: where each interrupt vector goes;
#  3. the 8259 PIC remapped, so IRQ 0-15 arrive at vectors 32-47 instead of on top of the CPU's
#     exceptions (0-31), and all but the timer and the keyboard masked;
#  4. the 8254 PIT programmed to interrupt 100 times a second; `sti`; `hlt` until 10 ticks;
#  5. keys from the i8042 keyboard controller on IRQ 1: scancodes → characters, echoed; Enter
#     ends the line, and the scancodes of the line are printed in hex;
#  6. a drop to ring 3; the user program cannot use the hypercall port (IOPL is 0, so `out` would
#     fault) and makes a system call instead: the kernel makes the hypercall for it.
#
# Written to run on KVM's instruction emulator too (kvm_pvm, our development hosts), which
# implements `iret` and `int $n` only in real mode, and a far return only to the same privilege
# level. So, where a textbook kernel would write the instruction in brackets:
#  - handlers return with `interrupt_return` (below) instead of [`iret`]: the same effect for an
#    interrupt taken in ring 0 with interrupts on;
#  - ring 3 is entered with `sysexit` [`iret` with a ring-3 frame], and system calls are made with
#    `sysenter` [`int $0x80`], the fast system-call pair of 32-bit x86, which KVM emulates;
#  - the user program runs with interrupts off: an interrupt taken in ring 3 would need an `iret`
#    back to ring 3. The TSS is still loaded: it holds the ring-0 stack such an interrupt would use.
# On hardware KVM all of the bracketed forms work as well.
#
# The PIC, the PIT and the local APIC are KVM's in-kernel models (mini-kvm creates them for every
# guest outside real mode); the keyboard controller is mini-kvm's
# (src/devices/legacy/i8042.rs), and its IRQ 1 wakes the `hlt` below. Paging stays off, so this runs on every host, kvm_pvm included.

.include "hypercall.inc"

    .equ KERNEL_CS, 0x08
    .equ KERNEL_DS, 0x10
    .equ USER_CS,   0x18 | 3        # requested privilege level 3 in the selector's low bits
    .equ USER_DS,   0x20 | 3
    .equ TSS_SEL,   0x28

    .equ PIC1_COMMAND, 0x20
    .equ PIC1_DATA,    0x21
    .equ PIC2_COMMAND, 0xa0
    .equ PIC2_DATA,    0xa1
    .equ PIC_EOI,      0x20         # "end of interrupt": the PIC may deliver the next one
    .equ IRQ_BASE,     32           # IRQ n arrives at vector IRQ_BASE + n

    .equ PIT_CHANNEL0, 0x40
    .equ PIT_COMMAND,  0x43
    .equ PIT_HZ,       100
    .equ PIT_DIVISOR,  1193182 / PIT_HZ    # the PIT counts at 1.193182 MHz
    .equ TICKS_WANTED, 10

    .equ KBD_DATA,     0x60
    .equ KBD_STATUS,   0x64         # read: status; write: controller command
    .equ KBD_OUTPUT_FULL, 0x01      # status bit 0: a byte waits in port 0x60

    .equ GATE_KERNEL,  0x8e         # present, DPL 0, 32-bit interrupt gate (IF cleared on entry)

    .equ MSR_SYSENTER_CS,  0x174    # sysenter loads CS from here (SS = CS + 8); sysexit uses
    .equ MSR_SYSENTER_ESP, 0x175    #   CS + 16 and CS + 24 with RPL 3: our GDT is laid out so
    .equ MSR_SYSENTER_EIP, 0x176    #   that these are the user segments

    .equ SYS_WRITE, 1               # our system calls: EAX = number, EBX, ESI = arguments
    .equ SYS_EXIT,  2

# interrupt_return: `iret` for an interrupt taken in ring 0 with interrupts on. The stack holds
# EIP, CS, EFLAGS. Restore the flags with IF still clear, then `sti`, whose effect waits one
# instruction, and a far return that pops EIP and CS and drops the EFLAGS slot: no interrupt can
# arrive before the interrupted code is back.
.macro interrupt_return
    push 8(%esp)                    # a copy of the saved EFLAGS...
    andl $~0x200, (%esp)            # ...with IF clear
    popf
    sti
    lret $4
.endm

    .code32
    .text
    .globl _start
_start:
    say32 "interrupts: a small protected-mode kernel\n"

    # --- 1. GDT and TSS -------------------------------------------------------------------------
    # The TSS descriptor's base is split over three fields; fill it in now that we know `tss`.
    mov $tss, %eax
    mov %ax, gdt_tss + 2            # base bits 0-15
    shr $16, %eax
    mov %al, gdt_tss + 4            # base bits 16-23
    mov %ah, gdt_tss + 7            # base bits 24-31
    movl $kernel_stack_top, tss + 4 # ESP0: the stack for interrupts that arrive in ring 3
    movl $KERNEL_DS, tss + 8        # SS0
    movw $104, tss + 102            # I/O bitmap offset past the TSS's end: no I/O from ring 3

    lgdt gdt_descriptor
    ljmp $KERNEL_CS, $1f            # a far jump reloads CS from the new table
1:  mov $KERNEL_DS, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    mov %ax, %ss
    mov $kernel_stack_top, %esp
    mov $TSS_SEL, %ax
    ltr %ax                         # the task register: where ESP0/SS0 come from
    say32 "GDT: kernel and user segments and a TSS\n"

    # --- 2. IDT ---------------------------------------------------------------------------------
    xor %ebx, %ebx                  # vectors 0-31: CPU exceptions, all to one handler
1:  mov $exception, %eax
    mov $GATE_KERNEL, %dl
    call set_gate
    inc %ebx
    cmp $IRQ_BASE, %ebx
    jb 1b
2:  mov $spurious_irq, %eax         # vectors 32-47: IRQs we do not expect
    mov $GATE_KERNEL, %dl
    call set_gate
    inc %ebx
    cmp $IRQ_BASE + 16, %ebx
    jb 2b
    mov $IRQ_BASE + 0, %ebx         # IRQ 0: the PIT
    mov $timer_interrupt, %eax
    call set_gate
    mov $IRQ_BASE + 1, %ebx         # IRQ 1: the keyboard
    mov $keyboard_interrupt, %eax
    call set_gate
    lidt idt_descriptor
    say32 "IDT: exceptions, IRQs 0-15 at vectors 32-47\n"

    # --- 3. PIC ---------------------------------------------------------------------------------
    # Four "initialization command words" to each 8259: start (ICW1), vector base (ICW2), how
    # the two are cascaded (ICW3: the slave hangs off IRQ 2), 8086 mode (ICW4).
    mov $0x11, %al
    out %al, $PIC1_COMMAND
    out %al, $PIC2_COMMAND
    mov $IRQ_BASE, %al
    out %al, $PIC1_DATA
    mov $IRQ_BASE + 8, %al
    out %al, $PIC2_DATA
    mov $0x04, %al
    out %al, $PIC1_DATA
    mov $0x02, %al
    out %al, $PIC2_DATA
    mov $0x01, %al
    out %al, $PIC1_DATA
    out %al, $PIC2_DATA
    mov $0xfc, %al                  # masks: only IRQ 0 and IRQ 1 on the master
    out %al, $PIC1_DATA
    mov $0xff, %al                  # everything masked on the slave
    out %al, $PIC2_DATA
    say32 "PIC: remapped to vectors 32-47; timer and keyboard unmasked\n"

    # --- 4. PIT ---------------------------------------------------------------------------------
    mov $0x34, %al                  # channel 0, low then high byte, mode 2 (rate generator)
    out %al, $PIT_COMMAND
    mov $PIT_DIVISOR & 0xff, %al
    out %al, $PIT_CHANNEL0
    mov $PIT_DIVISOR >> 8, %al
    out %al, $PIT_CHANNEL0
    sti
    say32 "PIT: channel 0 at 100 Hz; interrupts on\n"
1:  hlt                             # sleep until an interrupt; the timer's wakes us
    cmpl $TICKS_WANTED, ticks
    jb 1b
    say32 "timer: "
    mov $TICKS_WANTED, %ebx         # (`ticks` may have moved on while we printed)
    hypercall HC_PUTNUM
    say32 " ticks\n"

    # --- 5. Keyboard ----------------------------------------------------------------------------
    say32 "keyboard: type a line, Enter ends it\n"
    mov $0xae, %al                  # "enable the keyboard interface": from now on keys arrive
    out %al, $KBD_STATUS
next_key:
    call wait_for_key
    cmp $'\n', %al
    je line_done
    call echo_key
    jmp next_key
line_done:
    hypercall HC_NEWLINE
    say32 "scancodes:"
    xor %esi, %esi
1:  cmp line_scancodes, %esi
    jae 2f
    mov $' ', %bl
    hypercall HC_PUTCHAR
    movzbl scancode_log(%esi), %eax
    call print_hex_byte
    inc %esi
    jmp 1b
2:  hypercall HC_NEWLINE

    # --- 6. Ring 3 ------------------------------------------------------------------------------
    say32 "ring 3: sysexit to user mode\n"
    xor %edx, %edx                  # wrmsr writes EDX:EAX to MSR ECX
    mov $MSR_SYSENTER_CS, %ecx
    mov $KERNEL_CS, %eax
    wrmsr
    mov $MSR_SYSENTER_ESP, %ecx     # the kernel stack for system calls
    mov $kernel_stack_top, %eax
    wrmsr
    mov $MSR_SYSENTER_EIP, %ecx     # the kernel's entry point for system calls
    mov $system_call, %eax
    wrmsr
    cli                             # ring 3 runs with interrupts off (see the top)
    mov $USER_DS, %ax               # data segments the user may use (sysexit sets only CS, SS)
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    mov $user_program, %edx         # sysexit: EIP = EDX, ESP = ECX, CS = 0x18|3, SS = 0x20|3
    mov $user_stack_top, %ecx
    sysexit

# ---- the user program (ring 3) ----------------------------------------------------------------
user_program:
    mov %cs, %eax                   # the low 2 bits of CS are the current privilege level
    and $3, %eax
    add $'0', %al
    mov %al, user_ring
    mov $SYS_WRITE, %eax
    mov $user_message, %ebx
    mov $user_message_len, %esi
    call system_call_stub
    mov $SYS_EXIT, %eax
    xor %ebx, %ebx                  # status 0
    call system_call_stub
    jmp .                           # not reached: exit does not return

# The user side of a system call (Linux's __kernel_vsyscall does the same): sysenter does not
# save where to come back, so tell the kernel in ECX (stack) and EDX (return address).
system_call_stub:
    mov %esp, %ecx
    mov $1f, %edx
    sysenter
1:  ret

# ---- interrupt and exception handlers (ring 0) ------------------------------------------------
timer_interrupt:
    incl ticks
    push %eax
    mov $PIC_EOI, %al
    out %al, $PIC1_COMMAND
    pop %eax
    interrupt_return

keyboard_interrupt:
    pusha
    in $KBD_STATUS, %al
    test $KBD_OUTPUT_FULL, %al      # nothing there: a stale interrupt
    jz 9f
    in $KBD_DATA, %al
    movzbl %al, %eax
    call take_scancode
9:  mov $PIC_EOI, %al
    out %al, $PIC1_COMMAND
    popa
    interrupt_return

spurious_irq:
    push %eax
    mov $PIC_EOI, %al
    out %al, $PIC1_COMMAND
    pop %eax
    interrupt_return

exception:
    say32 "kernel: unexpected CPU exception\n"
    mov $99, %ebx
    hypercall HC_EXIT

# sysenter from ring 3: the CPU is in ring 0 on the stack from MSR_SYSENTER_ESP, interrupts off.
# EAX = call number, EBX and ESI = arguments, ECX/EDX = the user's stack and return address.
system_call:
    push %ecx
    push %edx
    cmp $SYS_WRITE, %eax
    je 1f
    cmp $SYS_EXIT, %eax
    je 2f
    mov $-1, %eax                   # unknown system call
    jmp 3f
1:  mov %esi, %ecx                  # write(pointer EBX, length ESI): one WRITE hypercall
    hypercall HC_WRITE              # EAX = bytes written
3:  pop %edx
    pop %ecx
    sysexit                         # back to ring 3: EIP = EDX, ESP = ECX
2:  push %ebx
    say32 "kernel: the user program exited with status "
    mov (%esp), %ebx
    hypercall HC_PUTNUM
    hypercall HC_NEWLINE
    pop %ebx
    hypercall HC_EXIT

# ---- helpers -----------------------------------------------------------------------------------

# set_gate: IDT entry EBX -> handler EAX, kernel code segment, type/attributes DL.
set_gate:
    lea idt(, %ebx, 8), %edi
    mov %ax, (%edi)                 # handler bits 0-15
    movw $KERNEL_CS, 2(%edi)
    movb $0, 4(%edi)
    mov %dl, 5(%edi)
    shr $16, %eax
    mov %ax, 6(%edi)                # handler bits 16-31
    ret

# take_scancode (in the keyboard interrupt): EAX = one set-1 scancode. Tracks Shift, Ctrl and
# the 0xE0 prefix, and queues a character for each key pressed: ASCII, 1-26 for Ctrl-A..Ctrl-Z,
# 0x80-0x83 for the arrows up, down, left, right.
take_scancode:
    cmpb $0, line_closed            # log the scancodes of the line, up to Enter's press
    jne 1f
    mov line_scancodes, %ecx
    cmp $64, %ecx
    jae 1f
    mov %al, scancode_log(%ecx)
    incl line_scancodes
1:  cmpb $0, extended
    jne extended_key
    cmp $0xe0, %al
    je start_extended
    cmp $0x2a, %al                  # left or right Shift pressed / released
    je shift_down
    cmp $0x36, %al
    je shift_down
    cmp $0xaa, %al
    je shift_up
    cmp $0xb6, %al
    je shift_up
    cmp $0x1d, %al                  # Ctrl
    je ctrl_down
    cmp $0x9d, %al
    je ctrl_up
    test $0x80, %al                 # any other release: nothing to do
    jnz 9f
    cmp $keymap_size, %eax
    jae 9f
    mov $keymap, %esi
    cmpb $0, shift
    je 2f
    mov $keymap_shifted, %esi
2:  movzbl (%esi, %eax), %eax
    test %al, %al
    jz 9f
    cmpb $0, ctrl
    je 3f
    cmp $'a', %al                   # Ctrl + letter: its control code
    jb 9f
    cmp $'z', %al
    ja 9f
    sub $('a' - 1), %al
3:  jmp queue_key
start_extended:
    movb $1, extended
    ret
extended_key:
    movb $0, extended
    mov $0x80, %cl
    cmp $0x48, %al                  # up
    je 4f
    inc %cl
    cmp $0x50, %al                  # down
    je 4f
    inc %cl
    cmp $0x4b, %al                  # left
    je 4f
    inc %cl
    cmp $0x4d, %al                  # right
    jne 9f
4:  mov %cl, %al
    jmp queue_key
shift_down:
    movb $1, shift
    ret
shift_up:
    movb $0, shift
    ret
ctrl_down:
    movb $1, ctrl
    ret
ctrl_up:
    movb $0, ctrl
9:  ret

# queue_key: AL into the key ring buffer (64 bytes; the interrupt writes, the main loop reads).
queue_key:
    cmp $'\n', %al
    jne 1f
    movb $1, line_closed            # Enter: the line is complete (its release comes later)
1:  mov key_head, %ecx
    mov %al, key_buffer(%ecx)
    inc %ecx
    and $63, %ecx
    mov %ecx, key_head
    ret

# wait_for_key: the next key in AL. `sti; hlt` is the classic race-free sleep: STI enables
# interrupts only after the next instruction, so an interrupt cannot slip in between the check
# and the `hlt` and leave us asleep with a key waiting.
wait_for_key:
    cli
    mov key_tail, %ecx
    cmp key_head, %ecx
    jne 1f
    sti
    hlt
    jmp wait_for_key
1:  movzbl key_buffer(%ecx), %eax
    inc %ecx
    and $63, %ecx
    mov %ecx, key_tail
    sti
    ret

# echo_key: print the key in AL: itself, or ^X for Ctrl-X, or a name in brackets.
echo_key:
    cmp $0x80, %al
    jae echo_arrow
    cmp $0x1b, %al
    je echo_escape
    cmp $0x08, %al
    je echo_backspace
    cmp $0x09, %al
    je echo_tab
    cmp $0x20, %al
    jb echo_control
    mov %al, %bl
    hypercall HC_PUTCHAR
    ret
echo_control:
    push %eax
    mov $'^', %bl
    hypercall HC_PUTCHAR
    pop %ebx
    add $'@', %bl                   # 1 -> 'A', 3 -> 'C', ...
    hypercall HC_PUTCHAR
    ret
echo_escape:
    say32 "[esc]"
    ret
echo_backspace:
    say32 "[bs]"
    ret
echo_tab:
    say32 "[tab]"
    ret
echo_arrow:
    cmp $0x80, %al
    jne 1f
    say32 "[up]"
    ret
1:  cmp $0x81, %al
    jne 2f
    say32 "[down]"
    ret
2:  cmp $0x82, %al
    jne 3f
    say32 "[left]"
    ret
3:  say32 "[right]"
    ret

# print_hex_byte: AL as two lowercase hex digits.
print_hex_byte:
    push %eax
    shr $4, %al
    call print_hex_digit
    pop %eax
    and $0x0f, %al
print_hex_digit:
    movzbl %al, %eax
    movb hex_digits(%eax), %bl
    hypercall HC_PUTCHAR
    ret

# ---- data --------------------------------------------------------------------------------------
    .section .rodata
hex_digits:
    .ascii "0123456789abcdef"

# Set-1 scancode -> character, US layout, for the keys 0x00-0x39 (0: no character). Esc gives
# 0x1b, Backspace 0x08, Tab 0x09, Enter '\n'.
keymap:
    .byte 0, 0x1b
    .ascii "1234567890-="
    .byte 0x08, 0x09
    .ascii "qwertyuiop[]"
    .byte '\n', 0                   # Enter, left Ctrl
    .ascii "asdfghjkl;'`"
    .byte 0                         # left Shift
    .ascii "\\zxcvbnm,./"
    .byte 0, '*', 0, ' '            # right Shift, keypad *, left Alt, space
    .equ keymap_size, . - keymap
keymap_shifted:
    .byte 0, 0x1b
    .ascii "!@#$%^&*()_+"
    .byte 0x08, 0x09
    .ascii "QWERTYUIOP{}"
    .byte '\n', 0
    .ascii "ASDFGHJKL:\"~"
    .byte 0
    .ascii "|ZXCVBNM<>?"
    .byte 0, '*', 0, ' '

    .data
    .balign 8
# Our GDT: selectors 0x08/0x10 for ring 0, 0x18/0x20 for ring 3 (DPL 3), 0x28 the TSS.
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff        # 0x08 kernel code: base 0, limit 4 GiB, 32-bit, DPL 0
    .quad 0x00cf92000000ffff        # 0x10 kernel data
    .quad 0x00cffa000000ffff        # 0x18 user code: the same with DPL 3
    .quad 0x00cff2000000ffff        # 0x20 user data
gdt_tss:
    .word 103, 0                    # 0x28 TSS: limit 103 (104 bytes), base filled in at start
    .byte 0, 0x89, 0, 0             # present, DPL 0, type 9 (32-bit TSS, available)
gdt_end:
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long gdt
idt_descriptor:
    .word 256 * 8 - 1
    .long idt

user_message:
    .ascii "user: hello from ring "
user_ring:
    .ascii "?, through sysenter\n"
    .equ user_message_len, . - user_message

ticks:          .long 0
key_head:       .long 0
key_tail:       .long 0
line_scancodes: .long 0
shift:          .byte 0
ctrl:           .byte 0
extended:       .byte 0
line_closed:    .byte 0

    .bss
    .balign 8
idt:            .space 256 * 8
tss:            .space 104
key_buffer:     .space 64
scancode_log:   .space 64
    .balign 16
                .space 4096
kernel_stack_top:
                .space 4096
user_stack_top:
