//! What the fuzz targets share: reading a structured input, and cutting a byte stream into the
//! pieces that reads would deliver, at points the fuzzer chooses.

/// Reads fields off the front of a fuzz input; missing bytes read as zero, so every input is a
/// valid one.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        for b in &mut bytes {
            *b = self.u8();
        }
        u64::from_le_bytes(bytes)
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rest(self) -> &'a [u8] {
        self.data
    }

    /// The layout every stream target starts with: a count byte, that many (at most 32) piece
    /// sizes, then the stream itself.
    pub fn piece_sizes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8() % 33);
        self.bytes(n)
    }
}

/// Cuts `stream` into consecutive pieces: each size byte `b` (used in turn, cycling) gives a
/// piece of `1 + b*b/16` bytes (1 to 4065), so small and large reads both occur. No sizes: one
/// piece.
pub fn pieces<'a>(stream: &'a [u8], sizes: &'a [u8]) -> Vec<&'a [u8]> {
    pieces_scaled(stream, sizes, 1)
}

/// [`pieces`] with every piece `scale` times longer, so that a long stream is not cut into
/// hundreds of thousands of pushes.
pub fn pieces_scaled<'a>(stream: &'a [u8], sizes: &'a [u8], scale: usize) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![stream];
    }
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let b = usize::from(sizes[i % sizes.len()]);
        let (piece, after) = rest.split_at(((1 + b * b / 16) * scale).min(rest.len()));
        out.push(piece);
        rest = after;
        i += 1;
    }
    out
}

/// A small deterministic generator, for targets that derive many choices from one seed.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}
