-- IdPs look users up by email (Entra: emails[type eq "work"].value eq "…"). Matching the users'
-- JSON read every user of the directory (about 0.2 s for 100,000); the addresses now have rows
-- of their own, lower-cased, written with the user whenever its representation is written by a
-- create, PUT or PATCH, never by a plain (de)activation, which keeps its update HOT. An address
-- longer than 1,024 bytes lower-cased has no row (a B-tree entry must stay small); a lookup of
-- such an address reads the JSON as before.
create table scim_user_emails (
    tenant_id  uuid not null,
    user_id    uuid not null,
    email      text not null,
    primary key (tenant_id, email, user_id),
    foreign key (tenant_id, user_id) references scim_users (tenant_id, id) on delete cascade
);
create index scim_user_emails_user on scim_user_emails (tenant_id, user_id);

insert into scim_user_emails (tenant_id, user_id, email)
select distinct u.tenant_id, u.id, lower(e ->> 'value')
  from scim_users u,
       jsonb_array_elements(case when jsonb_typeof(u.resource -> 'emails') = 'array'
                                 then u.resource -> 'emails' else '[]'::jsonb end) e
 where jsonb_typeof(e -> 'value') = 'string' and octet_length(lower(e ->> 'value')) <= 1024;
