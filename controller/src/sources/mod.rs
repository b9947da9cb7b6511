//! Sources fill the shared store: a folder of manifests (file mode), the bundled demo, or the
//! cluster.

pub mod files;
pub mod kube;
pub mod lenient;
