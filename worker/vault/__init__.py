"""Who may do what, and the secrets kept for them: users, their OpenRouter keys encrypted
at rest (AES-256-GCM), API tokens and password hashes.

``crypto`` (the master key, the one ciphertext format, key fingerprints), ``accounts`` (every
database access of ``users``, ``keys`` and ``tokens`` commands), ``tokens``, ``passwords``.
"""
