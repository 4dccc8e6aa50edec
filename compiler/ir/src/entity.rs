//! Entity handles: dense `u32` indices into the arenas of a [`Context`](crate::Context).
//!
//! Handles are `Copy`, four bytes wide and carry no lifetime, so passes can hold
//! them across mutations (as Cranelift's `entities.rs` argues, references into
//! the IR would fight the borrow checker and be twice as large). A handle is only
//! meaningful for the context that produced it. Erased operations, values,
//! blocks and regions leave a tombstone in their arena that is never reused, so a
//! stale handle fails loudly instead of aliasing a new entity.

use std::fmt;

macro_rules! entity {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u32);

        impl $name {
            /// The handle for arena slot `index`.
            pub fn from_index(index: usize) -> Self {
                Self(u32::try_from(index).expect("invariant: fewer than 2^32 entities per arena"))
            }

            /// The arena slot this handle names.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

entity!(
    /// An operation.
    OpId,
    "op"
);
entity!(
    /// An SSA value: an operation result or a block argument.
    ValueId,
    "v"
);
entity!(
    /// A block: arguments plus an ordered list of operations.
    BlockId,
    "block"
);
entity!(
    /// A region: the blocks nested in an operation.
    RegionId,
    "region"
);
entity!(
    /// An interned type (see [`TypeData`](crate::TypeData)).
    Ty,
    "ty"
);
entity!(
    /// An interned attribute (see [`AttrData`](crate::AttrData)).
    Attr,
    "attr"
);
entity!(
    /// An interned string: op names, attribute keys, symbolic dimensions, names.
    Sym,
    "sym"
);
