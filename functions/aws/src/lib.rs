//! Twin Matcher's AWS adapters: S3 and SQS behind the core's ports.
//!
//! `twin-core` talks to storage and queues only through its own small traits
//! ([`twin_core::store::ObjectStore`], [`twin_core::queue::Queue`]); this crate is where those
//! ports meet AWS. [`S3Store`] keeps the storage layout's keys in one bucket, with conditional
//! writes (`If-None-Match: *`, `If-Match`) so that `dataset/CURRENT` and `models/CURRENT` move
//! safely under concurrent writers; [`SqsQueue`] carries the messages between the parts;
//! [`s3_event`] reads S3 notifications (as S3 sends them, as moto sends them, or wrapped in SQS).
//! [`AwsConfig`] says where everything is (from the environment in a Lambda, explicitly in
//! tests), and [`Aws`] holds the SDK clients and the small runtime that lets the core's
//! synchronous ports call the asynchronous SDK from any thread, even from inside another tokio
//! runtime. No SDK type leaks into the core; the Lambda functions build an [`Aws`] once at cold
//! start and hand its adapters to the core.

mod bridge;
mod config;
mod lambda;
mod s3;
pub mod s3_event;
mod sqs;

pub use config::{
    env_usize, env_var, runtime_from_env, Aws, AwsConfig, AwsError, Function, StaticCredentials,
    ENV_MODELS_DIR, ENV_THREADS,
};
pub use lambda::sqs_batch_response;
pub use s3::{PresignedPut, S3Store, UPLOAD_URL_SECONDS};
pub use sqs::SqsQueue;
