//! Content-defined cut points: FastCDC (v2020) driven by a secret, per-repository gear table.
//!
//! Owns: where chunks end. Must not touch: hashing, dedup, I/O. Pure and deterministic: the same
//! gear table, sizes and bytes always give the same cuts.
//!
//! fastcdc's own constructors only XOR a 64-bit seed into a public table; that keeps the
//! table's structure public and lets an observer of chunk sizes recover the seed. Here all 256
//! entries come from a keyed BLAKE3 XOF (see `crypto::Keys::gear_table`) and we drive
//! `fastcdc::v2020::cut_gear` ourselves.

use fastcdc::v2020::{Normalization, cut_gear, select_masks};

#[derive(Clone)]
pub struct Chunker {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

fn level(n: u32) -> Normalization {
    match n {
        0 => Normalization::Level0,
        1 => Normalization::Level1,
        2 => Normalization::Level2,
        _ => Normalization::Level3,
    }
}

impl Chunker {
    /// Sizes must be even with min < avg < max (validated by the repository config decoder).
    pub fn new(gear: [u64; 256], min: usize, avg: usize, max: usize, normalization: u32) -> Self {
        let (mask_s, mask_l) = select_masks(avg, level(normalization));
        let mut gear_ls = [0u64; 256];
        for (ls, g) in gear_ls.iter_mut().zip(gear.iter()) {
            *ls = g << 1;
        }
        Chunker {
            min,
            avg,
            max,
            mask_s,
            mask_l,
            gear: Box::new(gear),
            gear_ls: Box::new(gear_ls),
        }
    }

    /// Length of the chunk that starts at `buf[0]`. `buf` must hold at least `max` bytes unless
    /// it ends at the end of the stream; then the last chunk may be shorter than `min`.
    pub fn cut(&self, buf: &[u8]) -> usize {
        let (_, n) = cut_gear(
            buf,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        n
    }

    /// All chunk lengths of a complete in-memory buffer.
    pub fn cuts(&self, mut buf: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let n = self.cut(buf);
            out.push(n);
            buf = &buf[n..];
        }
        out
    }
}

/// Reads a stream and yields chunks, with one reusable buffer of twice the max chunk size:
/// memory does not grow with the stream's length.
pub struct StreamChunker<'c, R> {
    chunker: &'c Chunker,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<'c, R: std::io::Read> StreamChunker<'c, R> {
    pub fn new(chunker: &'c Chunker, reader: R) -> Self {
        Self::with_buffer(chunker, reader, Vec::new(), u64::MAX)
    }

    /// Reuses `buf` so that reading many files does not allocate a buffer per file. The buffer
    /// holds up to twice the max chunk size; for a stream expected to hold `size_hint` bytes it
    /// starts just big enough for them (a folder of small files never touches 8 MiB per reader)
    /// and grows if the stream turns out longer.
    pub fn with_buffer(chunker: &'c Chunker, reader: R, mut buf: Vec<u8>, size_hint: u64) -> Self {
        let want = (chunker.max * 2)
            .min(usize::try_from(size_hint.saturating_add(1)).unwrap_or(usize::MAX));
        if buf.len() < want {
            buf.resize(want, 0);
        }
        StreamChunker {
            chunker,
            reader,
            buf,
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// Gives the buffer back for the next file.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    fn fill(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof {
            if self.end == self.buf.len() {
                if self.end >= self.chunker.max {
                    break; // enough for a cut
                }
                // Longer than expected: grow to the full size (cuts need `max` bytes ahead).
                self.buf.resize(self.chunker.max * 2, 0);
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, borrowed from the internal buffer; `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<&[u8]>> {
        if self.end - self.start < self.chunker.max && !self.eof {
            self.fill()?;
        }
        if self.start == self.end {
            return Ok(None);
        }
        let n = self.chunker.cut(&self.buf[self.start..self.end]);
        let chunk = &self.buf[self.start..self.start + n];
        self.start += n;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunker(seed: u8) -> Chunker {
        let mut gear = [0u64; 256];
        for (i, g) in gear.iter_mut().enumerate() {
            *g = u64::from_le_bytes(
                *blake3::hash(&[seed, i as u8])
                    .as_bytes()
                    .first_chunk()
                    .unwrap(),
            );
        }
        Chunker::new(gear, 256, 1024, 4096, 1)
    }

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    proptest! {
        #[test]
        fn stream_cuts_equal_buffer_cuts(
            len in 0usize..40_000,
            seed in any::<u64>(),
            read_size in 1usize..5000,
            // The expected size may be wrong (a file that grew or shrank), or unknown.
            hint in prop_oneof![Just(u64::MAX), 0u64..50_000],
            reused in 0usize..10_000,
        ) {
            let d = data(len, seed);
            let c = chunker(1);
            let expected = c.cuts(&d);
            struct Trickle<'a>(&'a [u8], usize);
            impl std::io::Read for Trickle<'_> {
                fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                    let n = self.0.len().min(out.len()).min(self.1);
                    out[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let mut s = StreamChunker::with_buffer(&c, Trickle(&d, read_size), vec![7; reused], hint);
            let mut got = Vec::new();
            let mut joined = Vec::new();
            while let Some(ch) = s.next_chunk().unwrap() {
                got.push(ch.len());
                joined.extend_from_slice(ch);
            }
            prop_assert_eq!(got, expected);
            prop_assert_eq!(joined, d);
        }

        #[test]
        fn chunk_sizes_stay_in_bounds(len in 1usize..40_000, seed in any::<u64>()) {
            let d = data(len, seed);
            let c = chunker(2);
            let cuts = c.cuts(&d);
            for (i, n) in cuts.iter().enumerate() {
                prop_assert!(*n <= c.max);
                if i + 1 < cuts.len() {
                    prop_assert!(*n >= c.min);
                }
            }
        }
    }

    #[test]
    fn different_gear_tables_cut_differently() {
        let d = data(200_000, 9);
        assert_ne!(chunker(1).cuts(&d), chunker(2).cuts(&d));
    }

    #[test]
    fn an_insertion_only_moves_nearby_cuts() {
        let d = data(100_000, 3);
        let mut e = d.clone();
        e.splice(50_000..50_000, *b"inserted");
        let c = chunker(1);
        let ends = |cuts: Vec<usize>| {
            cuts.iter()
                .scan(0, |s, n| {
                    *s += n;
                    Some(*s)
                })
                .collect::<std::collections::HashSet<_>>()
        };
        let (a, b) = (ends(c.cuts(&d)), ends(c.cuts(&e)));
        let shifted: std::collections::HashSet<_> =
            b.iter().filter(|&&x| x > 50_008).map(|x| x - 8).collect();
        let tail: std::collections::HashSet<_> =
            a.iter().copied().filter(|&x| x > 60_000).collect();
        assert!(
            tail.is_subset(&shifted),
            "cuts far after the insertion must survive it"
        );
    }
}
