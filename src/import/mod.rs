//! Bringing existing registries into berth: a Distribution (`registry:2`) filesystem layout,
//! imported through the registry services so every byte is verified as if it were pushed.

pub mod distribution;
