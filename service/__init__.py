"""latentgram engine: data, latents, store, sampling, evaluation; the API lives in service.api."""
