-- Connecting Gmail or Outlook is bound to the sign-in that started it: the provider sends the
-- browser back to the web app, which completes the exchange with that user's credentials, and
-- the state is spent only by the session it was issued to. A consent given by someone else who
-- opened the link connects nothing.
ALTER TABLE oauth_states ADD COLUMN session_id uuid;
COMMENT ON COLUMN oauth_states.session_id IS 'The session that started the connection; only it may complete it.';
