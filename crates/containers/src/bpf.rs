//! Makes libseccomp's seccomp programs smaller without changing what they do.
//!
//! libseccomp compares the syscall number with each rule in turn: Docker's default profile on
//! x86_64, with its x86 and x32 sub-architectures, is a program of 980 instructions. Every
//! container loads it, and the kernel checks and JIT-compiles it, then runs it for every syscall
//! number to fill its action cache: 0.70 ms a load here. The container then walks the chain on
//! each syscall the cache does not answer. (libseccomp's own binary-tree option makes the
//! program longer, not shorter.)
//!
//! [`optimize`] evaluates the program for each architecture it tells apart and each run of
//! syscall numbers it cannot tell apart, with the arguments unknown. What is left of each is a
//! return, or the comparisons on arguments that decide it. Equal leftovers are shared, and a
//! binary search on the number picks one: 329 instructions for that profile, loaded in 0.09-0.13
//! ms. No crate does this. It works on libseccomp's output so that the rules stay libseccomp's
//! (syscall tables, argument comparisons, multiplexed syscalls) and only their layout changes.
//! A program using what this does not model (the index register, scratch memory, arithmetic on
//! the number or the architecture) is left as it is.

use std::collections::{BTreeSet, HashMap};

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;

/// Classic BPF (linux/bpf_common.h): instruction classes, and the codes this reads.
const CLASS_LD: u16 = 0x00;
const CLASS_ALU: u16 = 0x04;
const CLASS_JMP: u16 = 0x05;
const CLASS_RET: u16 = 0x06;
const LD_W_ABS: u16 = 0x20;
const RET_K: u16 = 0x06;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const JSET: u16 = 0x40;
/// The operand is the index register rather than the constant.
const SRC_X: u16 = 0x08;
/// The longest jump a conditional instruction can take.
const MAX_JUMP: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

impl Insn {
    fn new(code: u16, k: u32) -> Insn {
        Insn { code, jt: 0, jf: 0, k }
    }
}

/// `program` (`struct sock_filter`s in the host's byte order) made smaller, or `None` if it uses
/// what this does not model or would not come out shorter.
pub fn optimize(program: &[u8]) -> Option<Vec<u8>> {
    let insns = decode(program)?;
    let shape = Shape::of(&insns)?;
    let mut graph = Graph::default();
    let mut arches = shape.arches.clone();
    // An architecture the program does not name stands for every other.
    arches.push((0..=u32::MAX).find(|a| !shape.arches.contains(a))?);
    let mut sections = Vec::new();
    for arch in arches {
        let mut leaves: Vec<(u32, usize)> = Vec::new();
        for &start in &shape.nr_starts {
            let node = Eval { program: &insns, graph: &mut graph, nr: start, arch, memo: HashMap::new() }.known(0, 0);
            if leaves.last().is_none_or(|&(_, last)| last != node) {
                leaves.push((start, node));
            }
        }
        let tree = graph.search(&leaves);
        let section = match graph.nodes[tree] {
            Node::Ret(_) => tree,
            _ => graph.add(Node::Step(Insn::new(LD_W_ABS, NR), tree)),
        };
        sections.push((arch, section));
    }
    let (_, mut dispatch) = sections.pop()?;
    for (arch, section) in sections.into_iter().rev() {
        dispatch = graph.add(Node::Branch(Insn::new(CLASS_JMP | JEQ, arch), section, dispatch));
    }
    let root = match graph.nodes[dispatch] {
        Node::Ret(_) => dispatch,
        _ => graph.add(Node::Step(Insn::new(LD_W_ABS, ARCH), dispatch)),
    };
    let optimized = graph.emit(root);
    (optimized.len() < insns.len()).then(|| encode(&optimized))
}

fn decode(bytes: &[u8]) -> Option<Vec<Insn>> {
    let insns: Vec<Insn> = (bytes.chunks_exact(8))
        .map(|i| Insn {
            code: u16::from_ne_bytes([i[0], i[1]]),
            jt: i[2],
            jf: i[3],
            k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
        })
        .collect();
    (bytes.len().is_multiple_of(8) && !insns.is_empty()).then_some(insns)
}

fn encode(insns: &[Insn]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(insns.len() * 8);
    for i in insns {
        bytes.extend_from_slice(&i.code.to_ne_bytes());
        bytes.extend_from_slice(&[i.jt, i.jf]);
        bytes.extend_from_slice(&i.k.to_ne_bytes());
    }
    bytes
}

/// `a op k` for an ALU instruction, `None` for one this does not fold.
fn alu(code: u16, a: u32, k: u32) -> Option<u32> {
    Some(match code & 0xf0 {
        0x00 => a.wrapping_add(k),
        0x10 => a.wrapping_sub(k),
        0x20 => a.wrapping_mul(k),
        0x30 => a.checked_div(k)?,
        0x40 => a | k,
        0x50 => a & k,
        0x60 if k < 32 => a << k,
        0x70 if k < 32 => a >> k,
        0x80 => a.wrapping_neg(),
        0x90 => a.checked_rem(k)?,
        0xa0 => a ^ k,
        _ => return None,
    })
}

fn holds(op: u16, a: u32, k: u32) -> bool {
    match op {
        JEQ => a == k,
        JGT => a > k,
        JGE => a >= k,
        _ => a & k != 0,
    }
}

/// Where the program can go: the architectures it compares, and where the runs of syscall
/// numbers it cannot tell apart begin.
struct Shape {
    /// In the order the program compares them.
    arches: Vec<u32>,
    nr_starts: BTreeSet<u32>,
}

impl Shape {
    /// What the accumulator may hold at each instruction decides which comparisons are on the
    /// number or the architecture; `None` if the program does anything else with them, or
    /// anything this does not model.
    fn of(program: &[Insn]) -> Option<Shape> {
        const NUMBER: u8 = 1;
        const ARCHITECTURE: u8 = 2;
        const OTHER: u8 = 4;
        let mut may = vec![0u8; program.len()];
        may[0] = OTHER;
        let mut shape = Shape { arches: Vec::new(), nr_starts: BTreeSet::from([0]) };
        for (pc, insn) in program.iter().enumerate() {
            let held = may[pc];
            if held == 0 {
                continue;
            }
            let mut flow = |offset: u32, value: u8| -> Option<()> {
                let target = pc.checked_add(1)?.checked_add(usize::try_from(offset).ok()?)?;
                *may.get_mut(target)? |= value;
                Some(())
            };
            let op = insn.code & 0xf0;
            match insn.code & 0x07 {
                CLASS_LD if insn.code == LD_W_ABS && insn.k % 4 == 0 => flow(
                    0,
                    match insn.k {
                        NR => NUMBER,
                        ARCH => ARCHITECTURE,
                        _ => OTHER,
                    },
                )?,
                CLASS_ALU if insn.code & SRC_X == 0 && held == OTHER => {
                    alu(insn.code, 0, insn.k)?;
                    flow(0, OTHER)?;
                }
                CLASS_JMP if insn.code == CLASS_JMP | JA => flow(insn.k, held)?,
                CLASS_JMP if insn.code & SRC_X == 0 && matches!(op, JEQ | JGT | JGE | JSET) => {
                    let k = insn.k;
                    if held & NUMBER != 0 {
                        let starts: &[Option<u32>] = match op {
                            JEQ => &[Some(k), k.checked_add(1)],
                            JGT => &[k.checked_add(1)],
                            JGE => &[Some(k)],
                            _ => return None,
                        };
                        shape.nr_starts.extend(starts.iter().flatten());
                    }
                    if held & ARCHITECTURE != 0 {
                        if op != JEQ {
                            return None;
                        }
                        if !shape.arches.contains(&k) {
                            shape.arches.push(k);
                        }
                    }
                    flow(u32::from(insn.jt), held)?;
                    flow(u32::from(insn.jf), held)?;
                }
                CLASS_RET if insn.code == RET_K => {}
                _ => return None,
            }
        }
        Some(shape)
    }
}

/// A program as a graph of instructions, equal ones stored once.
#[derive(Default)]
struct Graph {
    nodes: Vec<Node>,
    ids: HashMap<Node, usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    /// A load or arithmetic, then the next node.
    Step(Insn, usize),
    /// A conditional jump: where to go if it holds, and if not.
    Branch(Insn, usize, usize),
    Ret(u32),
}

impl Graph {
    fn add(&mut self, node: Node) -> usize {
        if let Node::Branch(_, yes, no) = node
            && yes == no
        {
            return yes;
        }
        let nodes = &mut self.nodes;
        *self.ids.entry(node).or_insert_with(|| {
            nodes.push(node);
            nodes.len() - 1
        })
    }

    /// A binary search for the node of the run of numbers (`leaves`: where each begins, in order)
    /// the accumulator falls in.
    fn search(&mut self, leaves: &[(u32, usize)]) -> usize {
        if let [(_, node)] = leaves {
            return *node;
        }
        let (low, high) = leaves.split_at(leaves.len() / 2);
        let (high_node, low_node) = (self.search(high), self.search(low));
        self.add(Node::Branch(Insn::new(CLASS_JMP | JGE, high[0].0), high_node, low_node))
    }

    /// Lays the graph out from `root`. Each node comes after every node that jumps to it (jumps
    /// go forward only), a branch's `no` side right after it when it can; a step whose next
    /// node is elsewhere is followed by a `ja`, as is a branch for each side too far away to
    /// reach in one jump.
    fn emit(&self, root: usize) -> Vec<Insn> {
        let order = self.reverse_postorder(root);
        let mut place = vec![0usize; self.nodes.len()];
        for (i, &node) in order.iter().enumerate() {
            place[node] = i;
        }
        let follows = |node: usize, next: usize| place[next] == place[node] + 1;
        // Which branch sides need a `ja` after the branch.
        let mut far = vec![[false; 2]; self.nodes.len()];
        loop {
            let mut start = vec![0usize; self.nodes.len()];
            let mut at = 0;
            for &node in &order {
                start[node] = at;
                at += 1 + match self.nodes[node] {
                    Node::Step(_, next) => usize::from(!follows(node, next)),
                    Node::Branch(..) => far[node].iter().filter(|f| **f).count(),
                    Node::Ret(_) => 0,
                };
            }
            let mut changed = false;
            for &node in &order {
                if let Node::Branch(_, yes, no) = self.nodes[node] {
                    for (side, target) in [yes, no].into_iter().enumerate() {
                        if !far[node][side] && start[target] - (start[node] + 1) > MAX_JUMP {
                            far[node][side] = true;
                            changed = true;
                        }
                    }
                }
            }
            if changed {
                continue;
            }
            let mut out = Vec::with_capacity(at);
            let ja = |from: usize, to: usize| Insn::new(CLASS_JMP | JA, (to - from - 1) as u32);
            for &node in &order {
                let here = out.len();
                match self.nodes[node] {
                    Node::Step(insn, next) => {
                        out.push(insn);
                        if !follows(node, next) {
                            out.push(ja(here + 1, start[next]));
                        }
                    }
                    Node::Branch(insn, yes, no) => {
                        let [far_yes, far_no] = far[node];
                        let mut trampoline = here + 1;
                        let mut offset = |target: usize, is_far: bool| {
                            let to = if is_far { trampoline } else { start[target] };
                            trampoline += usize::from(is_far);
                            (to - here - 1) as u8
                        };
                        let (jt, jf) = (offset(yes, far_yes), offset(no, far_no));
                        out.push(Insn { jt, jf, ..insn });
                        for (target, is_far) in [(yes, far_yes), (no, far_no)] {
                            if is_far {
                                let from = out.len();
                                out.push(ja(from, start[target]));
                            }
                        }
                    }
                    Node::Ret(k) => out.push(Insn::new(RET_K, k)),
                }
            }
            return out;
        }
    }

    fn reverse_postorder(&self, root: usize) -> Vec<usize> {
        let mut seen = vec![false; self.nodes.len()];
        let mut post = Vec::new();
        // (node, whether its successors have been pushed)
        let mut stack = vec![(root, false)];
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                post.push(node);
                continue;
            }
            if seen[node] {
                continue;
            }
            seen[node] = true;
            stack.push((node, true));
            // Pushed last, visited first: the `no` side is visited last and so placed right after.
            let successors: &[usize] = match &self.nodes[node] {
                Node::Step(_, next) => &[*next],
                Node::Branch(_, yes, no) => &[*no, *yes],
                Node::Ret(_) => &[],
            };
            stack.extend(successors.iter().filter(|s| !seen[**s]).map(|&s| (s, false)));
        }
        post.reverse();
        post
    }
}

/// The program for one architecture and syscall number, arguments unknown.
struct Eval<'a> {
    program: &'a [Insn],
    graph: &'a mut Graph,
    nr: u32,
    arch: u32,
    /// Nodes already made for instructions reached with the accumulator unknown.
    memo: HashMap<usize, usize>,
}

impl Eval<'_> {
    /// From `pc` with the accumulator holding `a`: follows the program while what it does is
    /// known, then leaves the rest to [`Eval::unknown`].
    fn known(&mut self, mut pc: usize, mut a: u32) -> usize {
        loop {
            let insn = self.program[pc];
            match insn.code & 0x07 {
                CLASS_LD => match insn.k {
                    NR => a = self.nr,
                    ARCH => a = self.arch,
                    _ => return self.unknown(pc),
                },
                // Checked by `Shape`: only arithmetic it folds, on neither number nor architecture.
                CLASS_ALU => a = alu(insn.code, a, insn.k).unwrap_or_default(),
                CLASS_JMP if insn.code == CLASS_JMP | JA => pc += insn.k as usize,
                CLASS_JMP => pc += usize::from(if holds(insn.code & 0xf0, a, insn.k) { insn.jt } else { insn.jf }),
                _ => return self.graph.add(Node::Ret(insn.k)),
            }
            pc += 1;
        }
    }

    /// From `pc` with the accumulator holding what the instructions kept so far load.
    fn unknown(&mut self, pc: usize) -> usize {
        if let Some(&node) = self.memo.get(&pc) {
            return node;
        }
        let insn = self.program[pc];
        let node = match insn.code & 0x07 {
            CLASS_LD => match insn.k {
                NR => self.known(pc + 1, self.nr),
                ARCH => self.known(pc + 1, self.arch),
                _ => {
                    let next = self.unknown(pc + 1);
                    self.graph.add(Node::Step(insn, next))
                }
            },
            CLASS_ALU => {
                let next = self.unknown(pc + 1);
                self.graph.add(Node::Step(insn, next))
            }
            CLASS_JMP if insn.code == CLASS_JMP | JA => self.unknown(pc + 1 + insn.k as usize),
            CLASS_JMP => {
                let yes = self.unknown(pc + 1 + usize::from(insn.jt));
                let no = self.unknown(pc + 1 + usize::from(insn.jf));
                self.graph.add(Node::Branch(Insn { jt: 0, jf: 0, ..insn }, yes, no))
            }
            _ => self.graph.add(Node::Ret(insn.k)),
        };
        self.memo.insert(pc, node);
        node
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Runs `program` on a `struct seccomp_data` as the kernel does, written apart from the code
    /// above so that a mistake there shows. Also says whether it read past the architecture.
    fn run(program: &[Insn], data: &[u8; 64]) -> (u32, bool) {
        let (mut a, mut pc, mut read_args) = (0u32, 0usize, false);
        loop {
            let i = program[pc];
            pc += 1;
            match i.code {
                0x20 => {
                    let at = i.k as usize;
                    a = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                    read_args |= at >= 8;
                }
                0x05 => pc += i.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match i.code {
                        0x15 => a == i.k,
                        0x25 => a > i.k,
                        0x35 => a >= i.k,
                        _ => a & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                0x54 => a &= i.k,
                0x06 => return (i.k, read_args),
                code => panic!("instruction {code:#x} is not modelled by the test"),
            }
        }
    }

    fn data(arch: u32, nr: u32, args: &[u64; 7]) -> [u8; 64] {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        // The instruction pointer, then the six arguments.
        for (n, value) in args.iter().enumerate() {
            data[8 + 8 * n..16 + 8 * n].copy_from_slice(&value.to_ne_bytes());
        }
        data
    }

    /// Checks that `optimized` decides as `original` does: for each architecture `original`
    /// compares and two others; syscall numbers 0-1099, the same past x32's bit, around every
    /// number `original` compares, and the ends of the range; arguments zero and, where
    /// `original` reads them, each set in turn to each constant it compares, their neighbours
    /// and the same in the upper half, then random mixes of those.
    pub(crate) fn assert_equivalent(original: &[u8], optimized: &[u8]) {
        let (original, optimized) = (decode(original).unwrap(), decode(optimized).unwrap());
        let shape = Shape::of(&original).unwrap();
        let mut arches = shape.arches.clone();
        arches.extend([0, 0xdead_beef]);
        let mut nrs: Vec<u32> = (0..1100).chain(0x4000_0000..0x4000_0000 + 1100).collect();
        nrs.extend([0x3fff_ffff, 0x7fff_ffff, 0x8000_0000, u32::MAX - 1, u32::MAX]);
        nrs.extend(shape.nr_starts.iter().flat_map(|&s| [s.wrapping_sub(1), s, s.wrapping_add(1)]));
        let mut values = vec![0, 1, u64::from(u32::MAX), 1 << 32, u64::MAX];
        for insn in original.iter().filter(|i| matches!(i.code & 0x07, CLASS_ALU | CLASS_JMP)) {
            for v in [insn.k.wrapping_sub(1), insn.k, insn.k.wrapping_add(1)].map(u64::from) {
                values.extend([v, v << 32, v << 32 | v, v | 0xffff_ffff_0000_0000]);
            }
        }
        values.sort_unstable();
        values.dedup();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for &arch in &arches {
            for &nr in &nrs {
                let zero = data(arch, nr, &[0; 7]);
                let (expected, reads) = run(&original, &zero);
                assert_eq!(run(&optimized, &zero).0, expected, "arch {arch:#x} nr {nr:#x}");
                if !reads {
                    continue;
                }
                let check = |args: [u64; 7]| {
                    let input = data(arch, nr, &args);
                    assert_eq!(
                        run(&optimized, &input).0,
                        run(&original, &input).0,
                        "arch {arch:#x} nr {nr:#x} {args:x?}"
                    );
                };
                for n in 0..7 {
                    for &v in &values {
                        let mut args = [0; 7];
                        args[n] = v;
                        check(args);
                    }
                }
                for _ in 0..300 {
                    check([(); 7].map(|_| values[random(values.len())]));
                }
            }
        }
    }

    fn program(insns: &[Insn]) -> Vec<u8> {
        encode(insns)
    }

    fn jump(op: u16, k: u32, jt: u8, jf: u8) -> Insn {
        Insn { code: CLASS_JMP | op, jt, jf, k }
    }

    #[test]
    fn a_long_chain_becomes_a_search_with_jumps_that_reach() {
        // 400 runs of three numbers, each run with its own errno: a search too long for one
        // conditional jump to span.
        let mut insns = vec![Insn::new(LD_W_ABS, ARCH), jump(JEQ, 0xc000_003e, 1, 0), Insn::new(RET_K, 0)];
        insns.push(Insn::new(LD_W_ABS, NR));
        for nr in 0..1200u32 {
            insns.push(jump(JEQ, nr, 0, 1));
            insns.push(Insn::new(RET_K, 0x0005_0000 | (nr / 3)));
        }
        insns.push(Insn::new(RET_K, 0x7fff_0000));
        let original = program(&insns);
        let optimized = optimize(&original).unwrap();
        assert!(optimized.len() < original.len(), "{} -> {}", original.len() / 8, optimized.len() / 8);
        let out = decode(&optimized).unwrap();
        assert!(out.iter().any(|i| i.code == CLASS_JMP | JA), "far sides go through a ja");
        assert_eq!(out.last().unwrap().code, RET_K);
        assert_equivalent(&original, &optimized);
    }

    #[test]
    fn arguments_are_still_compared_and_what_is_not_modelled_is_left_alone() {
        // nr 7: allowed if the low half of arg 0 is 3 or its high half has bit 0; the rest errno.
        let insns = [
            Insn::new(LD_W_ABS, NR),
            jump(JEQ, 7, 0, 5),
            Insn::new(LD_W_ABS, 16),
            jump(JEQ, 3, 2, 0),
            Insn::new(LD_W_ABS, 20),
            jump(JSET, 1, 0, 1),
            Insn::new(RET_K, 0x7fff_0000),
            Insn::new(RET_K, 0x0005_0001),
        ];
        let original = program(&insns);
        // Already as small as it gets: nothing to gain.
        assert_eq!(optimize(&original), None);
        let mut padded = insns[..1].to_vec();
        padded.extend((100..140).flat_map(|nr| [jump(JEQ, nr, 0, 1), Insn::new(RET_K, 0x0005_0001)]));
        padded.extend(&insns[1..]);
        let original = program(&padded);
        let optimized = optimize(&original).unwrap();
        assert!(optimized.len() < original.len());
        assert_equivalent(&original, &optimized);

        // The index register (`ldx`), and arithmetic on the number.
        assert_eq!(optimize(&program(&[Insn::new(0x01, 0), Insn::new(RET_K, 0)])), None);
        let and_nr = [Insn::new(LD_W_ABS, NR), Insn::new(CLASS_ALU | 0x50, 0xff), Insn::new(RET_K, 0)];
        assert_eq!(optimize(&program(&and_nr)), None);
    }
}
