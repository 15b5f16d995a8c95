"""The NonLocal segmentor: ResNetV1c backbone, NLHead, FCN auxiliary head, EncoderDecoder."""
