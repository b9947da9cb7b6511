//! Request normalization: the Host header and the request path, each normalized once.
//! (Filled in by the routing work.)
