//! Maintenance lease objects (`leases/<generation>`, sealed, kind Lease): which endpoint may
//! forget, prune and compact the repository, and until when. TLV fields: 1 generation (u64,
//! equal to the number in the object's name), 2 holder (16 random bytes, fresh for every
//! maintenance run), 3 host (UTF-8), 4 endpoint label (UTF-8, e.g. `project1-sync/local`),
//! 5 taken at (i64 ns, holder's clock), 6 expires at (i64 ns, holder's clock; greater than
//! field 5), 7 released (u64 1; absent = held), 8 holder's process id (u64). See `format-spec/repository.md`,
//! "Maintenance lease".

use super::tlv::{Fields, TlvWriter, fixed};
use super::{DecodeError, DecodeResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub generation: u64,
    pub holder: [u8; 16],
    pub host: String,
    /// The holder's process id on `host`: a lease of a process that is gone from this very
    /// machine is free at once (a crashed maintainer need not be waited for).
    pub pid: u32,
    pub endpoint: String,
    pub taken_ns: i64,
    pub expires_ns: i64,
    /// Given back by its holder: the next taker need not wait for the expiry.
    pub released: bool,
    /// Fields of newer versions, kept so that re-encoding is exact.
    pub extra: Vec<(u16, Vec<u8>)>,
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = TlvWriter::new();
        w.u64(1, self.generation)
            .bytes(2, &self.holder)
            .bytes(3, self.host.as_bytes())
            .bytes(4, self.endpoint.as_bytes())
            .i64(5, self.taken_ns)
            .i64(6, self.expires_ns);
        if self.released {
            w.u64(7, 1);
        }
        w.u64(8, self.pid as u64);
        w.extra(&self.extra);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> DecodeResult<Self> {
        const W: &str = "maintenance lease";
        let f = Fields::parse(b, W)?;
        let extra = f.unknown(&[1, 2, 3, 4, 5, 6, 7, 8], W)?;
        let generation = f
            .opt_u64(1, W)?
            .ok_or_else(|| DecodeError::invalid(W, "no generation"))?;
        let taken_ns = f.req_i64(5, W)?;
        let expires_ns = f.req_i64(6, W)?;
        if expires_ns <= taken_ns {
            return Err(DecodeError::invalid(W, "expires before it was taken"));
        }
        let released = match f.opt_u64(7, W)? {
            None => false,
            Some(1) => true,
            Some(_) => {
                return Err(DecodeError::invalid(
                    W,
                    "released is encoded as 1 or absent",
                ));
            }
        };
        let pid = f
            .opt_u64(8, W)?
            .ok_or_else(|| DecodeError::invalid(W, "no process id"))?;
        let pid =
            u32::try_from(pid).map_err(|_| DecodeError::invalid(W, "process id too large"))?;
        Ok(Lease {
            pid,
            generation,
            holder: fixed(f.req(2, W)?, W)?,
            host: f.req_str(3, W)?,
            endpoint: f.req_str(4, W)?,
            taken_ns,
            expires_ns,
            released,
            extra,
        })
    }
}

/// The object name of a generation: 16 lowercase hex digits, so names sort by generation.
pub fn lease_name(generation: u64) -> String {
    format!("{generation:016x}")
}

/// The generation an object name stands for (`None`: not a lease name).
pub fn parse_lease_name(name: &str) -> Option<u64> {
    if name.len() != 16
        || !name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(name, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            generation: 7,
            holder: [0x42; 16],
            host: "laptop".into(),
            pid: 4321,
            endpoint: "p-sync/local".into(),
            taken_ns: 10,
            expires_ns: 20,
            released: false,
            extra: vec![],
        }
    }

    #[test]
    fn round_trips_and_rejects_bad_fields() {
        for l in [
            lease(),
            Lease {
                released: true,
                extra: vec![(9, b"x".to_vec())],
                ..lease()
            },
        ] {
            let b = l.encode();
            assert_eq!(Lease::decode(&b).unwrap(), l);
        }
        let backwards = Lease {
            expires_ns: 10,
            ..lease()
        };
        assert!(Lease::decode(&backwards.encode()).is_err());
        assert!(Lease::decode(&[]).is_err());
    }

    #[test]
    fn names_sort_by_generation() {
        assert_eq!(lease_name(10), "000000000000000a");
        assert_eq!(parse_lease_name("000000000000000a"), Some(10));
        assert_eq!(parse_lease_name("000000000000000A"), None);
        assert_eq!(parse_lease_name("0a"), None);
        assert!(lease_name(9) < lease_name(10));
    }
}
