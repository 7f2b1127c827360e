"""The alphaswarm-controller gRPC service: ProviderService over the provider registry."""
