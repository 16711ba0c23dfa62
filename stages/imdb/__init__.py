"""IMDB sentiment (fast.ai Lesson 5): tokenize, five models, evaluation, embeddings."""
