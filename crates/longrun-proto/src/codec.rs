//! The gRPC codec of longrun's services: tonic's prost codec, except that a
//! request that does not decode is the caller's mistake (`INVALID_ARGUMENT`)
//! rather than a server fault (`INTERNAL`, prost's default).

use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder};

/// `application/grpc+proto` with honest decode errors.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as tonic::codec::Codec>::Encoder;
    type Decoder = Decoding<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoding(self.0.decoder())
    }
}

/// Decodes like prost, refusing undecodable bytes as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct Decoding<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for Decoding<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        self.0.decode(buf).map_err(|status| {
            Status::invalid_argument(format!("the request message does not decode: {}", status.message()))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
