//! Storing blobs: encoding one blob, packs of blobs, the index of where
//! each blob lies.

pub mod blob;
pub mod index;
pub mod pack;
pub mod packer;
