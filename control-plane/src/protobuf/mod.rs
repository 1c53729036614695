//! Kubernetes' protobuf wire format for built-in types: decoding request bodies into JSON values
//! and encoding JSON values for clients that accept only protobuf.
