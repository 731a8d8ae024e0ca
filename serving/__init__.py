"""The recommendation API: FastAPI app serving the champion model to cultural-cloud apps."""
