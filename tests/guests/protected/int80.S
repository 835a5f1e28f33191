# summary: test: the textbook system call: ring 3 through iret, `int $0x80` into the kernel, iret back
#
# Run with --mode protected. Expected stdout on hardware KVM (kvm_intel, kvm_amd):
#   "kernel: entering ring 3\nuser: hello through int $0x80\nkernel: exit(0) from ring 3\n"
# status 0. On kvm_pvm, KVM's instruction emulator implements `int` and `iret` only in real mode,
# so the first `iret` is an emulation failure (status 126): that is why the built-in
# `interrupts` guest uses sysenter/sysexit instead, and this guest runs in the hardware-KVM rig.
#
# The kernel part builds its own GDT (kernel and user segments, a TSS whose SS0:ESP0 is the
# kernel stack an interrupt from ring 3 switches to) and an IDT with one gate: vector 0x80,
# DPL 3 so that ring 3 may call it. System calls: EAX = 1 write(EBX = text, ECX = length),
# EAX = 2 exit(EBX = status).

.include "hypercall.inc"

    .equ KERNEL_CODE, 0x08
    .equ KERNEL_DATA, 0x10
    .equ USER_CODE,   0x18 | 3          # RPL 3: ring 3 selectors
    .equ USER_DATA,   0x20 | 3
    .equ TSS_SEL,     0x28

    .code32
    .text
    .globl _start
_start:
    # The TSS descriptor's base is only known now: patch it into the GDT.
    mov $tss, %eax
    mov %ax, gdt_tss + 2
    shr $16, %eax
    mov %al, gdt_tss + 4
    mov %ah, gdt_tss + 7
    lgdt gdtr
    ljmp $KERNEL_CODE, $reload
reload:
    mov $KERNEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    movl $kernel_stack_top, tss + 4     # ESP0
    movl $KERNEL_DATA, tss + 8          # SS0
    mov $TSS_SEL, %ax
    ltr %ax

    # IDT gate 0x80: a 32-bit trap gate, DPL 3, to syscall_entry.
    mov $syscall_entry, %eax
    mov $idt + 0x80 * 8, %edi
    mov %ax, (%edi)
    movw $KERNEL_CODE, 2(%edi)
    movb $0, 4(%edi)
    movb $0xef, 5(%edi)                 # present, DPL 3, 32-bit trap gate
    shr $16, %eax
    mov %ax, 6(%edi)
    lidt idtr

    say32 "kernel: entering ring 3\n"
    # iret to ring 3: SS, ESP, EFLAGS, CS, EIP (interrupts stay off).
    push $USER_DATA
    push $user_stack_top
    push $0x002
    push $USER_CODE
    push $user_main
    iret

user_main:
    mov $USER_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov $1, %eax                        # write
    mov $user_text, %ebx
    mov $user_text_len, %ecx
    int $0x80
    mov $2, %eax                        # exit(0)
    xor %ebx, %ebx
    int $0x80
    jmp .

syscall_entry:                          # ring 0, on the TSS's kernel stack
    push %ds
    push %eax
    mov $KERNEL_DATA, %ax
    mov %ax, %ds
    pop %eax
    cmp $2, %eax
    je sys_exit
    hypercall HC_WRITE                  # EBX, ECX as the user gave them (flat segments)
    pop %ds
    iret
sys_exit:
    push %ebx
    say32 "kernel: exit(0) from ring 3\n"
    pop %ebx
    hypercall HC_EXIT

user_text:
    .ascii "user: hello through int $0x80\n"
    .equ user_text_len, . - user_text

    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff            # 0x08 kernel code: base 0, 4 GiB, ring 0
    .quad 0x00cf92000000ffff            # 0x10 kernel data
    .quad 0x00cffa000000ffff            # 0x18 user code: ring 3
    .quad 0x00cff2000000ffff            # 0x20 user data: ring 3
gdt_tss:
    .word 103, 0                        # 0x28 TSS: limit 103, base patched at start
    .byte 0, 0x89, 0, 0                 # present, 32-bit available TSS
gdt_end:
gdtr:
    .word gdt_end - gdt - 1
    .long gdt
idtr:
    .word 256 * 8 - 1
    .long idt

    .bss
    .p2align 4
tss:    .skip 104
idt:    .skip 256 * 8
        .skip 1024
kernel_stack_top:
        .skip 1024
user_stack_top:
