-- IdPs look users up by email (Entra: emails[type eq "work"].value eq "…"). Matching the users'
-- JSON read every user of the directory (about 0.2 s for 100,000); the addresses now have rows
-- of their own, lower-cased, written with the user whenever its representation is written by a
-- create, PUT or PATCH, never by a plain (de)activation, which keeps its update HOT. An address
-- longer than 1,024 bytes lower-cased has no row (a B-tree entry must stay small); a lookup of
-- such an address searches the JSON instead.
create table scim_user_emails (
    tenant_id  uuid not null,
    user_id    uuid not null,
    email      text not null,
    primary key (tenant_id, email, user_id),
    foreign key (tenant_id, user_id) references scim_users (tenant_id, id) on delete cascade
);
create index scim_user_emails_user on scim_user_emails (tenant_id, user_id);

-- The rows a user's representation gives: its emails' string values, lower-cased, each once.
-- The one definition the backfill below and every write of a user use.
create function scim_user_email_rows(resource jsonb) returns setof text
language sql immutable as $$
    select distinct lower(e ->> 'value')
      from jsonb_array_elements(case when jsonb_typeof(resource -> 'emails') = 'array'
                                     then resource -> 'emails' else '[]'::jsonb end) e
     where jsonb_typeof(e -> 'value') = 'string' and octet_length(lower(e ->> 'value')) <= 1024
$$;

insert into scim_user_emails (tenant_id, user_id, email)
select u.tenant_id, u.id, e.email from scim_users u, scim_user_email_rows(u.resource) as e(email);
